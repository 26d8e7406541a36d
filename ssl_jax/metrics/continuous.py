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
original's ``normalize_transport_weights``, so both weight vectors sum to 1 to the last
bits). Support = cell centres ((i+.5)/8, (j+.5)/8) in units of the image side, ground cost
= Euclidean distance, so the result is in fractions of the image side (≤ √2·7/8). Solved
exactly on the host by POT's network simplex (``ot.lp.emd2``, the field's standard transport
solver) on the full 64 × 64 problem, ~0.3 ms a map. Until e98ceba this was a HiGHS
transportation LP (``scipy.optimize.linprog``) on the cells where the two distributions
differ; HiGHS' presolve declared 1e-21–1e-9 deficits from the Gaussian target's tails
infeasible (55 of 300 maps quantised to multiples of 1/8, each aborting its whole batch).
The network simplex has no presolve and no feasibility tolerance to misjudge: with equal
totals every transportation problem is feasible and it ends at the optimum. The two 8×8
grids come from one jitted, batched call.

Degenerate maps (`alignment.degenerate`: any non-finite value, no positive mass, constant)
give NaN for MSE, KL and EMD — the original sanitised them and scored the result (a uniform
distribution for an all-zero map). Targets are not checked: an image without boxes has the
all-zero target of the original (uniform for KL and EMD).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy.spatial import distance_matrix

from ssl_jax.core.errors import UserError
from ssl_jax.metrics.alignment import EPS, _nan_where_degenerate, degenerate, jit_static, sanitize

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


def _mse(a, t, axis) -> jax.Array:
    """Kernel (shared with the fused grid): a the sanitised maps, t the sanitised target
    clipped to [0, 1]; `axis` the pixel axes."""
    return jnp.mean((jnp.minimum(a, 1.0) - t) ** 2, axis=axis)


@jax.jit
def mse(maps, target) -> jax.Array:
    """mean over pixels of (clip01(sanitize(a)) − clip01(sanitize(g)))²; NaN for a
    degenerate map."""
    _check_same(maps, target)
    t = jnp.clip(sanitize(target), 0, 1)
    return _nan_where_degenerate(_mse(sanitize(maps), t, (-2, -1)), maps)


def _distribution(x) -> jax.Array:
    x = sanitize(x) + EPS
    s = jnp.sum(x, axis=(-2, -1), keepdims=True)
    uniform = jnp.full_like(x, 1.0 / (x.shape[-1] * x.shape[-2]))
    return jnp.where(jnp.isfinite(s) & (s > 0), x / s, uniform)


@jax.jit
def kl_target_attention(maps, target) -> jax.Array:
    """KL(target ‖ attention) = Σ p (log p − log q), p and q = (sanitize(x) + 1e-8) / Σ;
    NaN for a degenerate map."""
    _check_same(maps, target)
    shape = jnp.broadcast_shapes(jnp.shape(maps), jnp.shape(target))
    p = _distribution(jnp.broadcast_to(target, shape))
    q = _distribution(jnp.broadcast_to(maps, shape))
    return _nan_where_degenerate(jnp.sum(p * (jnp.log(p) - jnp.log(q)), axis=(-2, -1)), maps)


@jax.jit
def target_terms(target) -> tuple[jax.Array, jax.Array]:
    """Per-target pieces of KL shared by every map of an image: (p, Σ p log p)."""
    p = _distribution(target)
    return p, jnp.sum(p * jnp.log(p), axis=(-2, -1))


def _kl_terms(a, p, plogp, axis) -> jax.Array:
    """Kernel (shared with the fused grid): KL(p ‖ q(a)) from the target's (p, Σ p log p)
    and the sanitised maps `a`; `axis` the pixel axes. A sum that is not finite and > 0
    means the uniform q."""
    ae = a + EPS
    s = jnp.sum(ae, axis=axis)
    cross = jnp.sum(jnp.log(ae) * p, axis=axis) - jnp.log(s)  # no TF32 matmul
    ok = jnp.isfinite(s) & (s > 0)
    n = int(np.prod([a.shape[i] for i in np.atleast_1d(axis)]))
    return jnp.where(ok, plogp - cross, plogp + jnp.log(jnp.float32(n)))


@jax.jit
def kl_from_terms(maps, p, plogp) -> jax.Array:
    """KL(p ‖ q(maps)) using Σ p = 1: Σ p log p − Σ p log(a + ε) + log Σ(a + ε) (one log
    per pixel and a dot product per map; equal to `kl_target_attention` to float32 rounding;
    NaN for a degenerate map).
    """
    return _nan_where_degenerate(_kl_terms(sanitize(maps), p, plogp, (-2, -1)), maps)


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


def _normalize_rows(w) -> np.ndarray:
    """(N, n) → (N, n) float64: non-finite → 0, clamp ≥ 0, / row sum (uniform if that sum is
    0), the rounding residual into the row's (first) largest cell."""
    w = np.array(w, np.float64, copy=True)
    w[~np.isfinite(w)] = 0.0
    np.clip(w, 0.0, None, out=w)
    total = w.sum(axis=1)
    ok = np.isfinite(total) & (total > 0)
    w[~ok] = 1.0 / w.shape[1]
    w[ok] /= total[ok, None]
    rows = np.flatnonzero(ok)
    top = np.argmax(w[rows], axis=1)
    rest = w[rows].sum(axis=1) - w[rows, top]
    w[rows, top] = np.maximum(1.0 - rest, 0.0)
    return w


def normalize_transport_weights(weights) -> np.ndarray:
    """float64, non-finite → 0, clamp ≥ 0, / sum (uniform if 0), residual into the argmax."""
    return _normalize_rows(np.asarray(weights, np.float64).reshape(1, -1))[0]


def _support(size: int) -> np.ndarray:
    c = (np.arange(size, dtype=np.float64) + 0.5) / size
    yy, xx = np.meshgrid(c, c, indexing="ij")
    return np.stack([yy.ravel(), xx.ravel()], axis=1)


@functools.cache
def _pot():
    """POT, imported on first use: `import ot` loads every array backend it finds (torch
    included), seconds that only EMD needs."""
    import ot.lp

    return ot.lp


@functools.lru_cache(maxsize=8)
def _ground_cost(size: int) -> np.ndarray:
    cost = distance_matrix(_support(size), _support(size))
    cost.setflags(write=False)
    return cost


def _solve(a: np.ndarray, b: np.ndarray, cost: np.ndarray) -> float:
    value, log = _pot().emd2(a, b, cost, log=True, center_dual=False, check_marginals=False)
    if log["result_code"] != 1:  # 1 = OPTIMAL; valid input (equal totals) always reaches it
        raise RuntimeError(f"EMD network simplex did not reach the optimum: {log['warning']}")
    return float(value)


def wasserstein1(a, b, cost: np.ndarray) -> float:
    """Exact W1 between weight vectors a and b (each summing to 1, e.g. from
    `normalize_transport_weights`) on the ground cost matrix: POT's network simplex
    (`ot.lp.emd2`), optimal to float64 rounding."""
    a = np.ascontiguousarray(a, np.float64)
    b = np.ascontiguousarray(b, np.float64)
    c = np.ascontiguousarray(cost, np.float64)
    if a.ndim != 1 or b.ndim != 1 or c.shape != (a.size, b.size):
        raise UserError(f"need weights (n,), (m,) and a cost matrix (n, m); got {a.shape}, "
                        f"{b.shape}, {c.shape}")
    ok = np.all(np.isfinite(a)) and np.all(np.isfinite(b)) and (a >= 0).all() and (b >= 0).all()
    if not (ok and abs(a.sum() - 1.0) < 1e-9 and abs(b.sum() - 1.0) < 1e-9):
        raise UserError(f"transport weights must be finite, ≥ 0 and each sum to 1, got sums "
                        f"{a.sum()!r} and {b.sum()!r}; normalise them with "
                        f"normalize_transport_weights")
    return _solve(a, b, c)


def emd(maps, target, size: int = EMD_GRID_SIZE) -> np.ndarray:
    """Exact 2-D Wasserstein-1 on a size×size grid (host solver, batched).

    maps (..., H, W), target broadcastable to maps (e.g. (I, 1, H, W) against (I, L, H, W)).
    Returns float64 numpy (...), NaN for a degenerate map. The grids and the degenerate
    flags come from one jitted call per operand; the weights of all maps are normalised at
    once (targets shared by several maps once); the only per-map work is the solver call.
    """
    _check_same(maps, target)
    shape = np.broadcast_shapes(np.shape(maps), np.shape(target))
    lead, n = shape[:-2], size * size
    m, t = jnp.asarray(maps), jnp.asarray(target)
    bad = np.broadcast_to(np.asarray(degenerate(m)), lead).reshape(-1)
    wa = _normalize_rows(np.asarray(emd_grids(m, size)).reshape(-1, n))
    wt = _normalize_rows(np.asarray(emd_grids(t, size)).reshape(-1, n))
    wa = np.broadcast_to(wa.reshape(*m.shape[:-2], n), (*lead, n)).reshape(-1, n)
    wt = np.broadcast_to(wt.reshape(*t.shape[:-2], n), (*lead, n)).reshape(-1, n)
    cost = _ground_cost(size)
    out = np.full(wa.shape[0], np.nan)
    for i in np.flatnonzero(~bad):
        out[i] = _solve(wa[i], wt[i], cost)
    return out.reshape(lead)
