"""Attention ↔ expert-box alignment metrics (SPEC R4.1, R4.2), vectorised.

Conventions (DESIGN.md): maps are ``(..., H, W)`` floats (the study's min-max-normalised
heatmaps; float16 is accepted and upcast to float32); masks are bool and broadcast against
the maps (numpy rules); boxes are ``(..., K, 4)`` int pixel *edges* ``(x1, y1, x2, y2)``,
end-exclusive, as `ssl_jax.io.dataset.box_edges` returns them, with a ``(..., K)`` bool validity
mask for padding. Every function is pure and jit-able; leading axes are batch axes.

Thresholding (SPEC decision 2). Percentile ``p`` keeps exactly
``k = max(1, round(n·(100 − p)/100))`` pixels (Python ``round``: half to even; ``p = 0``
keeps all ``n``), chosen by value descending, ties by flat row-major index ascending. NaN
ranks below every number (it never enters a top-k set before a finite pixel) and −0.0
equals +0.0. One `jax.lax.top_k` (stable: equal values keep index order) of the largest k
serves every percentile of a call (for 16-bit float maps, one packed integer sort —
`_packed16_order`).

Degenerate maps (`degenerate`). A map is degenerate when it has any non-finite value (NaN,
±inf), no finite positive mass (every value ≤ 0, the all-zero map included) or is constant
(max = min). Every metric of a degenerate map is NaN — IoU at every percentile, coverage,
pointing, top-k pointing, per-box IoU and pointing (and so per-feature pointing), MSE, KL,
EMD and the localisation metrics — in the standalone functions and in the fused grid alike
(a validity flag per map, then `where`; static shapes, no host round trip). Why NaN: such a
map carries no ranking, so any number would come from the repair rather than the map. The
original (and this port before) sanitised first (NaN/±inf → 0, clamp ≥ 0) and then let the
tie rule (flat index ascending) pick the top-k pixels: an all-NaN map became all zeros whose
"top 10 %" is the first rows (IoU@90 0.98 against a box in the top rows), a map with one
+inf pixel pointed at it (pointing 1) while its sanitised mass was zero (coverage 0), and a
constant map scored whatever box lay at the top left. Non-degenerate maps get exactly the
numbers they got before. NaN-aware aggregation (`aggregate`) skips such maps and reports how
many it excluded; tables count them. Masks, orders and ranks (`threshold_masks`,
`top_order`, `pixel_ranks`, …) are not metrics and keep the sanitise-then-tie rule.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

EPS = 1e-8


# --------------------------------------------------------------------------- helpers


def jit_static(*static: str) -> Callable:
    """jax.jit with the named arguments static; lists/arrays given for them become tuples
    (hashable), so callers may pass ``[90, 50]``. Shape checks run at trace time."""

    def deco(f):
        sig = inspect.signature(f)
        jf = jax.jit(f, static_argnames=static)

        @functools.wraps(f)
        def wrapper(*args, **kwargs):
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            for name in static:
                v = bound.arguments[name]
                if isinstance(v, (list, np.ndarray)):
                    bound.arguments[name] = tuple(np.asarray(v).tolist())
                elif isinstance(v, (np.integer, np.floating)):
                    bound.arguments[name] = v.item()
            return jf(*bound.args, **bound.kwargs)

        return wrapper

    return deco


def _flat(x: jax.Array) -> jax.Array:
    return x.reshape(*x.shape[:-2], x.shape[-2] * x.shape[-1])


def _as_float(maps) -> jax.Array:
    m = jnp.asarray(maps)
    if not jnp.issubdtype(m.dtype, jnp.floating) or m.dtype == jnp.float64:
        m = m.astype(jnp.float32)
    return m.astype(jnp.float32)


def sanitize(x) -> jax.Array:
    """float32, NaN/±inf → 0, clamped ≥ 0 (the original's ``sanitize``)."""
    x = jnp.asarray(x, jnp.float32)
    return jnp.maximum(jnp.where(jnp.isfinite(x), x, 0.0), 0.0)


def ranking_values(maps) -> jax.Array:
    """float32 values used for ranking: NaN → −inf (ranks last), −0.0 → +0.0."""
    v = _as_float(maps)
    v = jnp.where(jnp.isnan(v), -jnp.inf, v)
    return jnp.where(v == 0, jnp.float32(0), v)


def _invalid(flat) -> jax.Array:
    """Degenerate flag over the last axis of flat maps (..., n) in any float dtype."""
    v = flat if jnp.issubdtype(flat.dtype, jnp.floating) else flat.astype(jnp.float32)
    nonfinite = ~jnp.all(jnp.isfinite(v), axis=-1)
    no_mass = ~jnp.any(v > 0, axis=-1)
    constant = jnp.max(v, axis=-1) == jnp.min(v, axis=-1)
    return nonfinite | no_mass | constant


@jax.jit
def degenerate(maps) -> jax.Array:
    """(..., H, W) maps → (...) bool, True where a map is degenerate: any non-finite value,
    no finite positive mass (all ≤ 0) or constant. Every metric is NaN for such a map."""
    m = jnp.asarray(maps)
    if m.ndim < 2:
        raise ValueError(f"maps must be (..., H, W), got {m.shape}")
    return _invalid(_flat(m))


def _nan_where_degenerate(out, maps, extra: int = 0) -> jax.Array:
    """out (..., *extra axes) as float32, NaN where the map (leading axes of `maps`,
    broadcast against out's leading axes) is degenerate."""
    bad = degenerate(maps)
    bad = bad.reshape(bad.shape + (1,) * extra)
    bad = jnp.broadcast_to(bad, jnp.broadcast_shapes(bad.shape, jnp.shape(out)))
    return jnp.where(bad, jnp.float32(jnp.nan), jnp.asarray(out, jnp.float32))


def _check_spatial(maps, masks, what: str = "masks", broadcast: bool = True) -> None:
    ms, gs = tuple(np.shape(maps)), tuple(np.shape(masks))
    if len(ms) < 2 or len(gs) < 2:
        raise ValueError(f"maps and {what} need (..., H, W); got maps {ms}, {what} {gs}")
    if ms[-2:] != gs[-2:]:
        raise ValueError(f"maps are {ms[-2]}x{ms[-1]} but {what} are {gs[-2]}x{gs[-1]} "
                         f"(maps {ms}, {what} {gs}); rasterise the boxes in the maps' frame")
    if not broadcast:
        return
    try:
        np.broadcast_shapes(ms, gs)
    except ValueError:
        raise ValueError(f"{what} {gs} do not broadcast against maps {ms}") from None


def _check_edges(edges, valid) -> None:
    es, vs = tuple(np.shape(edges)), tuple(np.shape(valid))
    if len(es) < 2 or es[-1] != 4:
        raise ValueError(f"box edges must be (..., K, 4) (x1, y1, x2, y2), got {es}")
    if vs != es[:-1]:
        raise ValueError(f"box validity mask must be {es[:-1]} for edges {es}, got {vs}")


def threshold_counts(n: int, percentiles: Sequence[float]) -> np.ndarray:
    """Pixels kept at each percentile (SPEC R4.1 k table: 224² → p90 5018 … p50 25088)."""
    out = []
    for p in np.atleast_1d(np.asarray(percentiles, dtype=object)).tolist():
        if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)):
            raise ValueError(f"percentile {p!r} is not a number")
        if not 0 <= p <= 100:
            raise ValueError(f"percentile {p} outside [0, 100]")
        out.append(n if p == 0 else max(1, round(n * (100 - p) / 100)))
    if not out:
        raise ValueError("no percentiles given")
    return np.asarray(out, np.int64)


def _packed16_order(maps, k: int) -> jax.Array:
    """top_order for 16-bit float maps with H·W ≤ 65536: one single-operand uint32 sort of
    (monotone 16-bit value key << 16 | 65535 − index) — value descending, index ascending,
    exactly the rule — which XLA sorts several times faster than a keyed top-k."""
    m = maps.reshape(*maps.shape[:-2], maps.shape[-2] * maps.shape[-1])
    n = m.shape[-1]
    m = jnp.where(jnp.isnan(m), jnp.asarray(-jnp.inf, m.dtype), m)  # NaN ties with -inf
    b = jax.lax.bitcast_convert_type(m, jnp.uint16).astype(jnp.uint32)
    b = jnp.where(m == 0, jnp.uint32(0), b)  # -0 → +0
    key = jnp.where(b >> 15 == 1, (~b) & jnp.uint32(0xFFFF), b | jnp.uint32(0x8000))
    packed = (key << 16) | (jnp.uint32(0xFFFF) - jnp.arange(n, dtype=jnp.uint32))
    top = jnp.sort(packed, axis=-1)[..., ::-1][..., :k]
    return (jnp.uint32(0xFFFF) - (top & jnp.uint32(0xFFFF))).astype(jnp.int32)


@jit_static("k")
def top_order(maps, k: int) -> jax.Array:
    """Flat indices of the k top-ranked pixels, in rank order: (..., k) int32.

    16-bit float maps (float16, bfloat16; the original cached float16) with H·W ≤ 65536 take
    a packed integer sort; other maps a stable `jax.lax.top_k` of float32 values.
    """
    n = maps.shape[-2] * maps.shape[-1]
    if not 1 <= k <= n:
        raise ValueError(f"k = {k} outside [1, {n}]")
    if maps.dtype in (jnp.float16, jnp.bfloat16) and n <= 65536:
        return _packed16_order(maps, k)
    return jax.lax.top_k(_flat(ranking_values(maps)), k)[1]


@jax.jit
def descending_order(maps) -> jax.Array:
    """Every flat pixel index by rank (value descending, index ascending): (..., H·W)."""
    return top_order(maps, maps.shape[-2] * maps.shape[-1])


def _partial_ranks(maps, k: int) -> jax.Array:
    """Rank (0 = top) of each of the k top pixels, k for every other pixel: (..., H·W)."""
    order = top_order(maps, k)
    n = maps.shape[-2] * maps.shape[-1]
    flat = order.reshape(-1, k)

    def one(o):
        return jnp.full((n,), k, jnp.int32).at[o].set(jnp.arange(k, dtype=jnp.int32))

    return jax.vmap(one)(flat).reshape(*order.shape[:-1], n)


@jax.jit
def pixel_ranks(maps) -> jax.Array:
    """Rank of every pixel (0 = top) under the tie rule: (..., H, W) int32."""
    h, w = maps.shape[-2:]
    return _partial_ranks(maps, h * w).reshape(maps.shape)


@jit_static("percentiles")
def threshold_masks(maps, percentiles: Sequence[float]) -> jax.Array:
    """(..., H, W) maps → (..., P, H, W) bool masks of the top-k pixels per percentile."""
    h, w = maps.shape[-2:]
    ks = threshold_counts(h * w, percentiles)
    ranks = _partial_ranks(maps, int(ks.max()))
    masks = ranks[..., None, :] < jnp.asarray(ks, jnp.int32)[:, None]
    return masks.reshape(*maps.shape[:-2], len(ks), h, w)


def _prefix_hits(g_sorted: jax.Array, ks: np.ndarray) -> jax.Array:
    """Sum of g_sorted[..., :k] for every (ascending or not) k, by static block sums."""
    uniq = np.unique(ks)
    blocks, start = [], 0
    for k in uniq:
        blocks.append(jnp.sum(g_sorted[..., start:int(k)], axis=-1, dtype=jnp.int32))
        start = int(k)
    cum = jnp.cumsum(jnp.stack(blocks, axis=-1), axis=-1)
    return cum[..., np.searchsorted(uniq, ks)]


# --------------------------------------------------------------------------- per-map kernels
# One formula per metric, shared by the standalone functions below and the fused grid
# (`grid`), which calls them on flat (maps, H·W) blocks with per-image pieces computed once.
# `axis` names the pixel axes: (-2, -1) for (..., H, W), -1 for flat (..., H·W). The
# degenerate-map NaN is applied by the callers (one flag per map).


def _count_iou(inter, union) -> jax.Array:
    """|M∩G| / (|M∪G| + 1e-8) from pixel counts, 0 when the union is empty."""
    return jnp.where(union > 0, inter / (union + EPS), 0.0)


def _iou_ranked(g_ranked, g_count, ks: np.ndarray) -> jax.Array:
    """IoU of the top-k mask with the mask at every k of `ks`: g_ranked (..., ≥ max k) the
    mask gathered in rank order, g_count (...) float32 its pixel count → (..., P)."""
    inter = _prefix_hits(g_ranked, ks).astype(jnp.float32)
    union = jnp.asarray(ks, jnp.float32) + g_count[..., None] - inter
    return _count_iou(inter, union)


def _coverage(a, g, axis) -> jax.Array:
    """Share of the sanitised energy `a` inside the mask `g` (0 when it is below 1e-8)."""
    total = jnp.sum(a, axis=axis)
    inside = jnp.sum(jnp.where(g, a, 0.0), axis=axis)
    return jnp.where(total < EPS, 0.0, inside / jnp.maximum(total, EPS))


def _first_max_hit(values, g_dilated) -> jax.Array:
    """Whether the first maximum of flat ranking values (..., n) lies in the (dilated) flat
    mask (broadcast against them): (...) bool."""
    idx = jnp.argmax(values, axis=-1)
    g = jnp.broadcast_to(g_dilated, values.shape)
    return jnp.take_along_axis(g, idx[..., None], axis=-1)[..., 0]


# --------------------------------------------------------------------------- IoU family


@jit_static("percentiles")
def iou_at_percentiles(maps, gt, percentiles: Sequence[float]):
    """IoU of the top-k mask with the (union) mask at every percentile, from one top-k.

    maps (..., H, W); gt bool broadcastable to maps. Returns ``(iou (..., P),
    attention_area (P,), annotation_area (...))``: IoU = |M∩G| / (|M∪G| + 1e-8), 0 when the
    union is empty, NaN for a degenerate map; areas are fractions of H·W (SPEC R4.1).
    """
    _check_spatial(maps, gt)
    h, w = maps.shape[-2:]
    n = h * w
    ks = threshold_counts(n, percentiles)
    shape = jnp.broadcast_shapes(maps.shape, jnp.shape(gt))
    raw = maps
    maps = jnp.broadcast_to(maps, shape)
    g = _flat(jnp.broadcast_to(jnp.asarray(gt, bool), shape))
    order = top_order(maps, int(ks.max()))
    g_count = jnp.sum(g, axis=-1, dtype=jnp.int32).astype(jnp.float32)
    iou = _nan_where_degenerate(_iou_ranked(jnp.take_along_axis(g, order, axis=-1), g_count,
                                            ks), raw, 1)
    return iou, jnp.asarray(ks / n, jnp.float32), g_count / n


@jit_static("percentile")
def iou(maps, gt, percentile: float = 90):
    """Single-percentile IoU (..., ) — `iou_at_percentiles` with one percentile."""
    return iou_at_percentiles(maps, gt, (percentile,))[0][..., 0]


@jax.jit
def coverage(maps, gt) -> jax.Array:
    """Fraction of the sanitised attention energy inside the mask (0 when that energy is
    below 1e-8); NaN for a degenerate map."""
    _check_spatial(maps, gt)
    return _nan_where_degenerate(_coverage(sanitize(maps), jnp.asarray(gt, bool), (-2, -1)),
                                 maps)


@jit_static("height", "width")
def box_masks(edges, valid, height: int, width: int) -> jax.Array:
    """(..., K, 4) edges + (..., K) valid → (..., K, H, W) bool (padding rows all False)."""
    _check_edges(edges, valid)
    e = jnp.asarray(edges, jnp.int32)
    rows = jnp.arange(height)[:, None]
    cols = jnp.arange(width)[None, :]
    x1, y1, x2, y2 = (e[..., i][..., None, None] for i in range(4))
    m = (rows >= y1) & (rows < y2) & (cols >= x1) & (cols < x2)
    return m & jnp.asarray(valid, bool)[..., None, None]


@jit_static("percentiles")
def box_iou(maps, edges, valid, percentiles: Sequence[float]) -> jax.Array:
    """Per-box IoU of the top-k mask with each box's own mask (SPEC R4.1
    ``compute_per_bbox_iou``): maps (I, ..., H, W), edges (I, K, 4), valid (I, K) →
    (I, ..., P, K), NaN for padding boxes and degenerate maps; IoU = |M∩B| / (|M∪B| + 1e-8),
    0 if the union is empty."""
    _check_edges(edges, valid)
    maps = jnp.asarray(maps)
    if edges.shape[0] != maps.shape[0] or maps.ndim < 3:
        raise ValueError(f"maps (I, ..., H, W) and edges (I, K, 4) must share I; got maps "
                         f"{maps.shape}, edges {tuple(edges.shape)}")
    h, w = maps.shape[-2:]
    tm = threshold_masks(maps, percentiles)  # (I, ..., P, H, W)
    bm = box_masks(edges, valid, h, w)  # (I, K, H, W)
    extra = tm.ndim - 3  # axes between I and (H, W) in tm, P included
    bm = bm.reshape(bm.shape[:1] + (1,) * extra + bm.shape[1:])  # (I, 1.., K, H, W)
    tmk = tm[..., None, :, :]  # (I, ..., P, 1, H, W)
    inter = jnp.sum(tmk & bm, axis=(-2, -1), dtype=jnp.int32).astype(jnp.float32)
    union = jnp.sum(tmk | bm, axis=(-2, -1), dtype=jnp.int32).astype(jnp.float32)
    out = _nan_where_degenerate(_count_iou(inter, union), maps, 2)
    v = jnp.asarray(valid, bool).reshape(valid.shape[:1] + (1,) * extra + valid.shape[1:])
    return jnp.where(v, out, jnp.nan)


@jit_static("threshold", "axis")
def corloc(ious, threshold: float = 0.5, axis: int = 0) -> jax.Array:
    """CorLoc: fraction of images (along `axis`) whose IoU ≥ threshold (NaN ignored)."""
    x = jnp.asarray(ious, jnp.float32)
    ok = jnp.isfinite(x)
    hits = jnp.sum(jnp.where(ok, x >= threshold, False), axis=axis)
    return hits / jnp.maximum(jnp.sum(ok, axis=axis), 1)


# --------------------------------------------------------------------------- pointing game


@jit_static("tolerance")
def dilate(mask, tolerance: int) -> jax.Array:
    """Square dilation by `tolerance` pixels (max-pool 2t+1, stride 1, same size) over the
    last two axes."""
    if tolerance < 0 or int(tolerance) != tolerance:
        raise ValueError(f"tolerance must be a non-negative integer of pixels, got {tolerance}")
    m = jnp.asarray(mask, bool)
    if tolerance == 0:
        return m
    k = 2 * int(tolerance) + 1
    dims = (1,) * (m.ndim - 2) + (k, k)
    out = jax.lax.reduce_window(m.astype(jnp.float32), -jnp.inf, jax.lax.max, dims,
                                (1,) * m.ndim, "SAME")
    return out > 0.5


@jax.jit
def argmax_yx(maps) -> tuple[jax.Array, jax.Array]:
    """(y, x) of the first maximum in row-major order (NaN never wins)."""
    w = maps.shape[-1]
    idx = jnp.argmax(_flat(ranking_values(maps)), axis=-1)
    return idx // w, idx % w


@jit_static("tolerance")
def pointing_hit(maps, gt, tolerance: int = 0) -> jax.Array:
    """1.0 where the first maximum (row-major) falls in the mask dilated by `tolerance` px,
    else 0.0; NaN for a degenerate map."""
    _check_spatial(maps, gt)
    shape = jnp.broadcast_shapes(maps.shape, jnp.shape(gt))
    v = _flat(ranking_values(jnp.broadcast_to(maps, shape)))
    return _nan_where_degenerate(_first_max_hit(v, _flat(dilate(gt, tolerance))), maps)


@jit_static("k", "tolerance")
def top_k_pointing(maps, gt, k: int = 5, tolerance: int = 0) -> jax.Array:
    """Number of the k top-ranked pixels inside the (dilated) mask: (...,) float32 (an
    integer count; NaN for a degenerate map)."""
    _check_spatial(maps, gt)
    shape = jnp.broadcast_shapes(maps.shape, jnp.shape(gt))
    order = top_order(jnp.broadcast_to(maps, shape), k)
    g = _flat(jnp.broadcast_to(dilate(gt, tolerance), shape))
    hits = jnp.sum(jnp.take_along_axis(g, order, axis=-1), axis=-1, dtype=jnp.int32)
    return _nan_where_degenerate(hits, maps)


@jit_static("tolerance")
def box_pointing(maps, edges, valid, tolerance: int = 0) -> jax.Array:
    """Per-box pointing (SPEC R4.2 ``pointing_game_by_feature`` before the OR by label):
    maps (I, ..., H, W), edges (I, K, 4), valid (I, K) → (I, ..., K) float, 1.0 if the first
    maximum lies in the box dilated by `tolerance` (clipped to the image), NaN for padding
    and for a degenerate map. OR over boxes of one label with `aggregate.by_label_any`."""
    _check_edges(edges, valid)
    if tolerance < 0 or int(tolerance) != tolerance:
        raise ValueError(f"tolerance must be a non-negative integer of pixels, got {tolerance}")
    maps = jnp.asarray(maps)
    if edges.shape[0] != maps.shape[0]:
        raise ValueError(f"maps (I, ..., H, W) and edges (I, K, 4) must share I; got maps "
                         f"{maps.shape}, edges {tuple(edges.shape)}")
    y, x = argmax_yx(maps)  # (I, ...)
    e = jnp.asarray(edges, jnp.int32)
    extra = maps.ndim - 3
    e = e.reshape(e.shape[:1] + (1,) * extra + e.shape[1:])  # (I, 1.., K, 4)
    x1, y1, x2, y2 = (e[..., i] for i in range(4))
    nonempty = (x2 > x1) & (y2 > y1)
    t = int(tolerance)
    hit = ((x[..., None] >= x1 - t) & (x[..., None] < x2 + t)
           & (y[..., None] >= y1 - t) & (y[..., None] < y2 + t) & nonempty)
    v = jnp.asarray(valid, bool).reshape(valid.shape[:1] + (1,) * extra + valid.shape[1:])
    return jnp.where(v, _nan_where_degenerate(hit, maps, 1), jnp.nan)
