"""Attention ↔ expert-box alignment metrics (SPEC R4.1-R4.3), vectorised.

All functions take heatmaps (..., H, W) float32 (the study's min-max-normalised maps) and a
ground truth broadcastable against them, and are jit-able; leading axes (images, layers,
methods, …) are batch axes. Everything for many percentiles comes from one sort per map.

Threshold at percentile p keeps exactly k = max(1, round(n·(100 − p)/100)) pixels (Python
round: half to even), chosen by value descending, then flat index ascending (SPEC decision 2:
deterministic ties); p = 0 keeps all pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

EPS = 1e-8


def threshold_counts(n: int, percentiles: Sequence[float]) -> np.ndarray:
    """Pixels kept at each percentile (the SPEC k table: 224² → p90 5018, p50 25088)."""
    out = []
    for p in percentiles:
        if not 0 <= p <= 100:
            raise ValueError(f"percentile {p} outside [0, 100]")
        out.append(n if p == 0 else max(1, round(n * (100 - p) / 100)))
    return np.asarray(out, np.int64)


def _flat(x: jax.Array) -> jax.Array:
    return x.reshape(*x.shape[:-2], x.shape[-2] * x.shape[-1])


def sanitize(x: jax.Array) -> jax.Array:
    x = jnp.asarray(x, jnp.float32)
    return jnp.maximum(jnp.where(jnp.isfinite(x), x, 0.0), 0.0)


def descending_order(maps: jax.Array) -> jax.Array:
    """Flat pixel indices by value descending, ties by index ascending: (..., H·W)."""
    # a stable sort of -value keeps equal values in index order
    return jnp.argsort(-_flat(jnp.asarray(maps, jnp.float32)), axis=-1, stable=True)


def threshold_masks(maps: jax.Array, percentiles: Sequence[float]) -> jax.Array:
    """(..., H, W) maps → (..., P, H, W) bool masks of the top-k pixels per percentile."""
    h, w = maps.shape[-2:]
    ks = jnp.asarray(threshold_counts(h * w, percentiles))
    order = descending_order(maps)
    rank = jnp.argsort(order, axis=-1)  # rank of every pixel
    masks = rank[..., None, :] < ks[:, None]
    return masks.reshape(*maps.shape[:-2], len(percentiles), h, w)


def iou_at_percentiles(maps: jax.Array, gt: jax.Array, percentiles: Sequence[float]):
    """IoU of the top-k mask with the union mask at every percentile, from one sort.

    Returns (iou (..., P), attention_area (P,), annotation_area (...)). IoU = |M∩G| /
    (|M∪G| + 1e-8), 0 when the union is empty (SPEC R4.1).
    """
    h, w = maps.shape[-2:]
    n = h * w
    ks = threshold_counts(n, percentiles)
    g = _flat(jnp.broadcast_to(jnp.asarray(gt, bool), maps.shape)).astype(jnp.int32)
    order = descending_order(maps)
    hits = jnp.cumsum(jnp.take_along_axis(g, order, axis=-1), axis=-1)
    inter = hits[..., jnp.asarray(ks - 1)].astype(jnp.float32)
    g_count = jnp.sum(g, axis=-1, keepdims=True).astype(jnp.float32)
    union = jnp.asarray(ks, jnp.float32) + g_count - inter
    iou = jnp.where(union > 0, inter / (union + EPS), 0.0)
    return iou, jnp.asarray(ks / n, jnp.float32), g_count[..., 0] / n


def coverage(maps: jax.Array, gt: jax.Array) -> jax.Array:
    """Fraction of the (sanitised) attention energy inside the boxes; 0 for an empty map."""
    a = sanitize(maps)
    total = jnp.sum(a, axis=(-2, -1))
    inside = jnp.sum(a * jnp.asarray(gt, jnp.float32), axis=(-2, -1))
    return jnp.where(total < EPS, 0.0, inside / jnp.maximum(total, EPS))


def dilate(mask: jax.Array, tolerance: int) -> jax.Array:
    """Square dilation by `tolerance` pixels (max-pool 2t+1, stride 1, same size)."""
    if tolerance <= 0:
        return jnp.asarray(mask, bool)
    k = 2 * tolerance + 1
    m = jnp.asarray(mask, jnp.float32)
    dims = (1,) * (m.ndim - 2) + (k, k)
    out = jax.lax.reduce_window(m, -jnp.inf, jax.lax.max, dims, (1,) * m.ndim, "SAME")
    return out > 0.5


def pointing_hit(maps: jax.Array, gt: jax.Array, tolerance: int = 0) -> jax.Array:
    """1.0 where the first maximum (row-major) of the map falls in the (dilated) mask."""
    idx = jnp.argmax(_flat(jnp.asarray(maps, jnp.float32)), axis=-1)
    g = _flat(jnp.broadcast_to(dilate(gt, tolerance), maps.shape))
    return jnp.take_along_axis(g, idx[..., None], axis=-1)[..., 0].astype(jnp.float32)


def gaussian_target(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Soft ground truth (SPEC R4.3): per box an axis-aligned Gaussian at its centre with
    sigma = max(side/4, 1) px, peak 1; pixelwise max over boxes, / max; zeros if no box."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    if b.shape[0] == 0:
        return np.zeros((height, width), np.float32)
    y = (np.arange(height, dtype=np.float32) + 0.5)[:, None]
    x = (np.arange(width, dtype=np.float32) + 0.5)[None, :]
    out = np.zeros((height, width), np.float32)
    for left, top, right, bottom in b:
        bw, bh = max((right - left) * width, 1.0), max((bottom - top) * height, 1.0)
        cx, cy = (left + right) * width / 2, (top + bottom) * height / 2
        sx, sy = max(bw / 4, 1.0), max(bh / 4, 1.0)
        g = np.exp(-((x - cx) ** 2 / (2 * sx**2) + (y - cy) ** 2 / (2 * sy**2)))
        g = (g / g.max()).astype(np.float32) if g.max() > 0 else g.astype(np.float32)
        out = np.maximum(out, g)
    m = out.max()
    return np.clip(out / m, 0, 1).astype(np.float32) if m > 0 else out


def mse(maps: jax.Array, target: jax.Array) -> jax.Array:
    a = jnp.clip(sanitize(maps), 0, 1)
    t = jnp.clip(sanitize(target), 0, 1)
    return jnp.mean((a - t) ** 2, axis=(-2, -1))


def kl_target_attention(maps: jax.Array, target: jax.Array) -> jax.Array:
    """KL(target ‖ attention) with both maps made distributions ((x + 1e-8) / sum)."""

    def dist(x):
        x = sanitize(x) + EPS
        s = jnp.sum(x, axis=(-2, -1), keepdims=True)
        uniform = jnp.full_like(x, 1.0 / (x.shape[-1] * x.shape[-2]))
        return jnp.where(jnp.isfinite(s) & (s > 0), x / s, uniform)

    p = dist(jnp.broadcast_to(target, maps.shape))
    q = dist(maps)
    return jnp.sum(p * (jnp.log(p) - jnp.log(q)), axis=(-2, -1))


def alignment_metrics(maps: jax.Array, gt: jax.Array, target: jax.Array,
                      percentiles: Sequence[float], tolerance: int = 0) -> dict[str, jax.Array]:
    """Every per-map metric in one call: maps (I, ..., H, W), gt (I, H, W) bool union masks,
    target (I, H, W) Gaussian soft targets. Returns {name: (I, ...)} with "iou@p" per
    percentile, "coverage", "pointing", "mse", "kl", "annotation_area"."""
    extra = maps.ndim - gt.ndim
    gt_b = jnp.asarray(gt).reshape(gt.shape[:1] + (1,) * extra + gt.shape[1:])
    tg_b = jnp.asarray(target).reshape(target.shape[:1] + (1,) * extra + target.shape[1:])
    iou, _, area = iou_at_percentiles(maps, gt_b, percentiles)
    out = {f"iou@{p:g}": iou[..., i] for i, p in enumerate(percentiles)}
    out["coverage"] = coverage(maps, gt_b)
    out["pointing"] = pointing_hit(maps, gt_b, tolerance)
    out["mse"] = mse(maps, tg_b)
    out["kl"] = kl_target_attention(maps, tg_b)
    out["annotation_area"] = area
    return out


alignment_metrics_jit = jax.jit(alignment_metrics, static_argnames=("percentiles", "tolerance"))
