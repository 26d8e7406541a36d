"""Threshold-free metrics against Gaussian soft targets (SPEC R4.3): MSE, KL(target ‖
attention) and EMD (exact 2-D Wasserstein-1 on an 8×8 grid).

Soft target: per box an axis-aligned Gaussian at the box centre, sigma = max(side/4, 1) px
(side ≥ 1 px), evaluated at pixel centres (j + 0.5, i + 0.5) and scaled to peak 1; the
pixelwise max over the boxes, divided by its max and clipped to [0, 1]; zeros without boxes.
Boxes are float pixel coordinates ``(x1, y1, x2, y2)`` = ``(left·W, top·H, right·W,
bottom·H)`` of the clamped box (`ssl_jax.io.dataset.boxes_to_frame`), not the integer edges.

EMD. Both maps are sanitised (NaN/±inf → 0, clamp ≥ 0) and resized to 8×8 by bilinear
interpolation with align_corners=False and no antialiasing (torch ``F.interpolate``; at
224 → 8 each cell averages the 2×2 pixels around 28k + 13.5), normalised to sum 1 in
float64 (uniform if the sum is 0; the rounding residual goes to the largest cell, as the
original's ``normalize_transport_weights``). Support = cell centres ((i+.5)/8, (j+.5)/8) in
units of the image side, ground cost = Euclidean distance, so the result is in fractions of
the image side (≤ √2·7/8). Solved exactly on the host: because the ground cost is a metric,
W1(a, b) = W1((a − b)⁺, (a − b)⁻) (Kantorovich–Rubinstein), so only the cells where the two
distributions differ enter a transportation LP, solved by HiGHS (`scipy.optimize.linprog`,
dual simplex) — typically ~30 × 30 variables instead of 64 × 64. The two 8×8 grids come
from one jitted, batched call.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import linprog
from scipy.spatial import distance_matrix

from ssl_jax.metrics.alignment import EPS, jit_static, sanitize

EMD_GRID_SIZE = 8


# --------------------------------------------------------------------------- soft targets


@jit_static("height", "width")
def gaussian_targets(boxes_px, valid, height: int, width: int) -> jax.Array:
    """(..., K, 4) float pixel boxes + (..., K) valid → (..., H, W) float32 soft union."""
    b = jnp.asarray(boxes_px, jnp.float32)
    if b.ndim < 2 or b.shape[-1] != 4:
        raise ValueError(f"boxes must be (..., K, 4) pixel (x1, y1, x2, y2), got {b.shape}")
    v = jnp.asarray(valid, bool)
    if v.shape != b.shape[:-1]:
        raise ValueError(f"box validity mask must be {b.shape[:-1]}, got {v.shape}")
    b = jnp.where(v[..., None], b, 0.0)
    x1, y1, x2, y2 = (b[..., i][..., None, None] for i in range(4))
    bw = jnp.maximum(x2 - x1, 1.0)
    bh = jnp.maximum(y2 - y1, 1.0)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    sx, sy = jnp.maximum(bw / 4, 1.0), jnp.maximum(bh / 4, 1.0)
    y = jnp.arange(height, dtype=jnp.float32)[:, None] + 0.5
    x = jnp.arange(width, dtype=jnp.float32)[None, :] + 0.5
    g = jnp.exp(-((x - cx) ** 2 / (2 * sx**2) + (y - cy) ** 2 / (2 * sy**2)))
    gmax = jnp.max(g, axis=(-2, -1), keepdims=True)
    g = jnp.where(gmax > 0, g / jnp.where(gmax > 0, gmax, 1.0), g)
    g = jnp.where(v[..., None, None], g, 0.0)
    u = jnp.max(g, axis=-3) if g.shape[-3] else jnp.zeros((*g.shape[:-3], height, width))
    umax = jnp.max(u, axis=(-2, -1), keepdims=True)
    u = jnp.where(umax > 0, u / jnp.where(umax > 0, umax, 1.0), u)
    return jnp.clip(u, 0.0, 1.0)


def gaussian_target(boxes, height: int, width: int) -> np.ndarray:
    """Soft target of one image from (K, 4) NORMALISED (left, top, right, bottom) boxes."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    px = b * np.array([width, height, width, height], np.float64)
    return np.asarray(gaussian_targets(px, np.ones(len(b), bool), height, width))


# --------------------------------------------------------------------------- MSE, KL


def _check_same(maps, target) -> None:
    ms, ts = tuple(np.shape(maps)), tuple(np.shape(target))
    if len(ms) < 2 or len(ts) < 2 or ms[-2:] != ts[-2:]:
        raise ValueError(f"attention and target must have the same H x W, got maps {ms} vs "
                         f"target {ts}")
    try:
        np.broadcast_shapes(ms, ts)
    except ValueError:
        raise ValueError(f"target {ts} does not broadcast against maps {ms}") from None


@jax.jit
def mse(maps, target) -> jax.Array:
    """mean over pixels of (clip01(sanitize(a)) − clip01(sanitize(g)))²."""
    _check_same(maps, target)
    a = jnp.clip(sanitize(maps), 0, 1)
    t = jnp.clip(sanitize(target), 0, 1)
    return jnp.mean((a - t) ** 2, axis=(-2, -1))


def _distribution(x) -> jax.Array:
    x = sanitize(x) + EPS
    s = jnp.sum(x, axis=(-2, -1), keepdims=True)
    uniform = jnp.full_like(x, 1.0 / (x.shape[-1] * x.shape[-2]))
    return jnp.where(jnp.isfinite(s) & (s > 0), x / s, uniform)


@jax.jit
def kl_target_attention(maps, target) -> jax.Array:
    """KL(target ‖ attention) = Σ p (log p − log q), p and q = (sanitize(x) + 1e-8) / Σ."""
    _check_same(maps, target)
    shape = jnp.broadcast_shapes(jnp.shape(maps), jnp.shape(target))
    p = _distribution(jnp.broadcast_to(target, shape))
    q = _distribution(jnp.broadcast_to(maps, shape))
    return jnp.sum(p * (jnp.log(p) - jnp.log(q)), axis=(-2, -1))


@jax.jit
def target_terms(target) -> tuple[jax.Array, jax.Array]:
    """Per-target pieces of KL shared by every map of an image: (p, Σ p log p)."""
    p = _distribution(target)
    return p, jnp.sum(p * jnp.log(p), axis=(-2, -1))


@jax.jit
def kl_from_terms(maps, p, plogp) -> jax.Array:
    """KL(p ‖ q(maps)) using Σ p = 1: Σ p log p − Σ p log(a + ε) + log Σ(a + ε) (one log
    per pixel and a dot product per map; equal to `kl_target_attention` to float32 rounding).
    """
    a = sanitize(maps) + EPS
    s = jnp.sum(a, axis=(-2, -1))
    cross = jnp.sum(p * jnp.log(a), axis=(-2, -1)) - jnp.log(s)
    ok = jnp.isfinite(s) & (s > 0)
    n = maps.shape[-1] * maps.shape[-2]
    return jnp.where(ok, plogp - cross, plogp + jnp.log(jnp.float32(n)))


# --------------------------------------------------------------------------- EMD


def _bilinear_matrix(out_size: int, in_size: int) -> np.ndarray:
    """torch bilinear, align_corners=False, no antialias, as an (out, in) matrix."""
    scale = in_size / out_size
    m = np.zeros((out_size, in_size), np.float64)
    for o in range(out_size):
        src = max(scale * (o + 0.5) - 0.5, 0.0)
        i0 = min(int(np.floor(src)), in_size - 1)
        i1 = i0 + 1 if i0 < in_size - 1 else i0
        lam = src - i0
        m[o, i0] += 1 - lam
        m[o, i1] += lam
    return m.astype(np.float32)


@jit_static("size")
def emd_grids(maps, size: int = EMD_GRID_SIZE) -> jax.Array:
    """(..., H, W) → (..., size, size) float32: sanitised, bilinear (no antialias) resized."""
    h, w = maps.shape[-2:]
    ry = jnp.asarray(_bilinear_matrix(size, h))
    rx = jnp.asarray(_bilinear_matrix(size, w))
    return jnp.einsum("ih,...hw,jw->...ij", ry, sanitize(maps), rx,
                      precision=jax.lax.Precision.HIGHEST)


def normalize_transport_weights(weights) -> np.ndarray:
    """float64, non-finite → 0, clamp ≥ 0, / sum (uniform if 0), residual into the argmax."""
    w = np.asarray(weights, np.float64).reshape(-1).copy()
    w[~np.isfinite(w)] = 0.0
    w = np.clip(w, 0.0, None)
    total = w.sum()
    if not np.isfinite(total) or total <= 0:
        return np.full(w.size, 1.0 / w.size)
    w /= total
    i = int(np.argmax(w))
    rest = w.sum() - w[i]
    w[i] = max(1.0 - rest, 0.0)
    return w


def _support(size: int) -> np.ndarray:
    c = (np.arange(size, dtype=np.float64) + 0.5) / size
    yy, xx = np.meshgrid(c, c, indexing="ij")
    return np.stack([yy.ravel(), xx.ravel()], axis=1)


def wasserstein1(a, b, cost: np.ndarray) -> float:
    """Exact W1 between weight vectors a and b (each summing to 1) on a metric ground cost."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    src = np.flatnonzero(d > 0)
    dst = np.flatnonzero(d < 0)
    if src.size == 0 or dst.size == 0:
        return 0.0
    s, t = d[src], -d[dst]
    # Solve at unit mass: when the two maps nearly agree the moved mass is tiny (1e-6 and
    # less) and HiGHS' absolute feasibility tolerances (1e-7) then misjudge the LP
    # (scipy 1.17 declared such problems infeasible). W1 scales linearly with the mass.
    mass = min(s.sum(), t.sum())
    s, t = s / mass, t / mass
    # the side with the smaller total is matched exactly; the other side is an upper bound
    # (the two totals differ only by float64 rounding)
    ns, nt = src.size, dst.size
    c = cost[np.ix_(src, dst)].ravel()
    rows = np.zeros((ns, ns * nt))
    for i in range(ns):
        rows[i, i * nt:(i + 1) * nt] = 1.0
    cols = np.zeros((nt, ns * nt))
    for j in range(nt):
        cols[j, j::nt] = 1.0
    if s.sum() <= t.sum():
        a_eq, b_eq, a_ub, b_ub = rows, s, cols, t
    else:
        a_eq, b_eq, a_ub, b_ub = cols, t, rows, s
    r = linprog(c, A_ub=a_ub, b_ub=b_ub * (1 + 1e-12) + 1e-15, A_eq=a_eq, b_eq=b_eq,
                bounds=(0, None), method="highs")
    if not r.success:
        raise RuntimeError(f"EMD transport LP failed: {r.message}")
    return float(r.fun) * float(mass)


def emd(maps, target, size: int = EMD_GRID_SIZE) -> np.ndarray:
    """Exact 2-D Wasserstein-1 on a size×size grid (host solver, batched).

    maps (..., H, W), target broadcastable to maps (e.g. (I, 1, H, W) against (I, L, H, W)).
    Returns float64 numpy (...). Targets shared by several maps are resized once.
    """
    _check_same(maps, target)
    shape = np.broadcast_shapes(np.shape(maps), np.shape(target))
    ga = np.asarray(emd_grids(jnp.asarray(maps), size))
    gt = np.asarray(emd_grids(jnp.asarray(target), size))
    ga = np.broadcast_to(ga, (*shape[:-2], size, size)).reshape(-1, size * size)
    gt_b = np.broadcast_to(gt, (*shape[:-2], size, size)).reshape(-1, size * size)
    cost = distance_matrix(_support(size), _support(size))
    out = np.empty(ga.shape[0])
    cache: dict[bytes, np.ndarray] = {}
    for i in range(ga.shape[0]):
        kt = gt_b[i].tobytes()
        if kt not in cache:
            cache[kt] = normalize_transport_weights(gt_b[i])
        out[i] = wasserstein1(normalize_transport_weights(ga[i]), cache[kt], cost)
    return out.reshape(shape[:-2])
