"""Localisation metrics the original lacks: Quantus' relevance mass accuracy, relevance rank
accuracy and ROC-AUC; DINO's attention-mass threshold with Jaccard; box-from-mask (largest
connected component) with LOST-style CorLoc.

An empty ground-truth mask makes these metrics undefined: they return NaN (never a hit, never
0), so that NaN-aware means skip the image instead of scoring it. So does a degenerate map
(`alignment.degenerate`: any non-finite value, no positive mass, or constant) for every
metric of a map here (mass accuracy, rank accuracy, ROC-AUC, mass Jaccard); the masks
(`mass_threshold_mask`) and boxes stay as computed from the sanitised map.

* Relevance mass accuracy (Arras et al. 2022; Quantus ``RelevanceMassAccuracy``):
  Σ_{G} |a| / Σ |a| (Quantus takes ``abs`` by default; max-normalisation cancels).
  NaN when the mask is empty or the map is all zero.
* Relevance rank accuracy (Quantus ``RelevanceRankAccuracy``): with K = |G|, the fraction of
  the K top-ranked pixels (our tie rule, `alignment`) that lie in G.
* ROC-AUC (Quantus ``AUC``: sklearn ``roc_curve`` + ``auc`` on the flattened map vs mask):
  the Mann–Whitney probability that a pixel inside G outranks one outside, ties counting ½
  (what the trapezoidal ROC with tied scores as one threshold gives). NaN when G is empty or
  covers the whole image.
* DINO mass threshold (Caron et al. 2021, ``visualize_attention.py``): keep the smallest set
  of top-ranked pixels whose mass reaches a fraction t (0.6) of the total, i.e. a pixel at
  rank r is kept iff the mass of the r pixels above it is < t·total. Maps are sanitised
  (non-finite → 0, clamp ≥ 0); an all-zero map keeps nothing. `mass_jaccard` = |M∩G| / |M∪G|
  (NaN when both are empty).
* Box from mask (host, ``scipy.ndimage.label``): the bounding box of the largest connected
  component (4-connectivity by default; ties → the component met first in raster order) as
  integer edges (x1, y1, x2, y2), end-exclusive; (0, 0, 0, 0) for an empty mask. LOST-style
  CorLoc: a map is correct when that box has box-IoU ≥ 0.5 with ANY valid expert box.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from ssl_jax.metrics.alignment import (
    _check_spatial,
    _flat,
    _nan_where_degenerate,
    jit_static,
    ranking_values,
    sanitize,
    top_order,
)


@jax.jit
def relevance_mass_accuracy(maps, gt) -> jax.Array:
    _check_spatial(maps, gt)
    a = jnp.abs(jnp.nan_to_num(jnp.asarray(maps, jnp.float32), nan=0.0, posinf=0.0,
                               neginf=0.0))
    g = jnp.asarray(gt, bool)
    inside = jnp.sum(jnp.where(g, a, 0.0), axis=(-2, -1))
    total = jnp.sum(a, axis=(-2, -1))
    empty = ~jnp.any(g, axis=(-2, -1))
    out = jnp.where(empty | (total <= 0), jnp.nan, inside / jnp.where(total > 0, total, 1.0))
    return _nan_where_degenerate(out, maps)


@jax.jit
def relevance_rank_accuracy(maps, gt) -> jax.Array:
    """|top-|G| pixels ∩ G| / |G|; NaN for an empty mask. One full ranking per map."""
    _check_spatial(maps, gt)
    shape = jnp.broadcast_shapes(jnp.shape(maps), jnp.shape(gt))
    n = shape[-1] * shape[-2]
    g = _flat(jnp.broadcast_to(jnp.asarray(gt, bool), shape))
    order = top_order(jnp.broadcast_to(maps, shape), n)
    k = jnp.sum(g, axis=-1, dtype=jnp.int32)
    g_sorted = jnp.take_along_axis(g, order, axis=-1)
    within = jnp.sum(g_sorted & (jnp.arange(n) < k[..., None]), axis=-1, dtype=jnp.int32)
    return _nan_where_degenerate(jnp.where(k > 0, within / jnp.maximum(k, 1), jnp.nan), maps)


@jax.jit
def roc_auc(maps, gt) -> jax.Array:
    """Mann–Whitney ROC-AUC of the map as a score for mask membership (ties ½)."""
    _check_spatial(maps, gt)
    shape = jnp.broadcast_shapes(jnp.shape(maps), jnp.shape(gt))
    n = shape[-1] * shape[-2]
    v = _flat(ranking_values(jnp.broadcast_to(maps, shape)))
    g = _flat(jnp.broadcast_to(jnp.asarray(gt, bool), shape))
    s = jnp.sort(v, axis=-1)
    # mid-rank (1-based) of every value: (#less + #less_or_equal + 1) / 2
    lt = jax.vmap(lambda a, q: jnp.searchsorted(a, q, side="left"))(
        s.reshape(-1, n), v.reshape(-1, n)).reshape(v.shape)
    le = jax.vmap(lambda a, q: jnp.searchsorted(a, q, side="right"))(
        s.reshape(-1, n), v.reshape(-1, n)).reshape(v.shape)
    mid = (lt + le + 1).astype(jnp.float32) / 2
    n_pos = jnp.sum(g, axis=-1, dtype=jnp.int32).astype(jnp.float32)
    n_neg = n - n_pos
    r_pos = jnp.sum(jnp.where(g, mid, 0.0), axis=-1)
    auc = (r_pos - n_pos * (n_pos + 1) / 2) / jnp.maximum(n_pos * n_neg, 1.0)
    return _nan_where_degenerate(jnp.where((n_pos > 0) & (n_neg > 0), auc, jnp.nan), maps)


@jit_static("fraction")
def mass_threshold_mask(maps, fraction: float = 0.6) -> jax.Array:
    """Smallest top-ranked pixel set holding `fraction` of the mass: (..., H, W) bool."""
    if not 0 < fraction <= 1:
        raise ValueError(f"mass fraction must be in (0, 1], got {fraction}")
    h, w = maps.shape[-2:]
    n = h * w
    a = _flat(sanitize(maps))
    order = top_order(maps, n)
    sorted_a = jnp.take_along_axis(a, order, axis=-1)
    before = jnp.cumsum(sorted_a, axis=-1) - sorted_a  # mass strictly above each rank
    total = jnp.sum(a, axis=-1, keepdims=True)
    keep_sorted = (before < fraction * total) & (total > 0)
    keep = jnp.zeros_like(keep_sorted)
    keep = jax.vmap(lambda k, o, ks: k.at[o].set(ks))(
        keep.reshape(-1, n), order.reshape(-1, n), keep_sorted.reshape(-1, n))
    return keep.reshape(maps.shape)


@jax.jit
def jaccard(a, b) -> jax.Array:
    """|A∩B| / |A∪B| over the last two axes; NaN when both are empty."""
    a, b = jnp.asarray(a, bool), jnp.asarray(b, bool)
    inter = jnp.sum(a & b, axis=(-2, -1), dtype=jnp.int32)
    union = jnp.sum(a | b, axis=(-2, -1), dtype=jnp.int32)
    return jnp.where(union > 0, inter / jnp.maximum(union, 1), jnp.nan)


@jit_static("fraction")
def mass_jaccard(maps, gt, fraction: float = 0.6) -> jax.Array:
    """Jaccard of DINO's mass-threshold mask with the ground truth; NaN for a degenerate
    map."""
    _check_spatial(maps, gt)
    return _nan_where_degenerate(jaccard(mass_threshold_mask(maps, fraction), gt), maps)


# --------------------------------------------------------------------------- boxes (host)


def box_from_mask(masks, connectivity: int = 1) -> np.ndarray:
    """(..., H, W) bool → (..., 4) int32 edges of the largest connected component.

    connectivity 1 = 4-neighbourhood (scipy default), 2 = 8-neighbourhood.
    """
    m = np.asarray(masks, bool)
    if m.ndim < 2:
        raise ValueError(f"masks must be (..., H, W), got {m.shape}")
    if connectivity not in (1, 2):
        raise ValueError(f"connectivity must be 1 (4-neighbour) or 2 (8-neighbour), got "
                         f"{connectivity}")
    structure = ndimage.generate_binary_structure(2, connectivity)
    flat = m.reshape(-1, *m.shape[-2:])
    out = np.zeros((flat.shape[0], 4), np.int32)
    for i, mi in enumerate(flat):
        lab, num = ndimage.label(mi, structure=structure)
        if num == 0:
            continue
        sizes = np.bincount(lab.ravel())[1:]
        best = int(np.argmax(sizes)) + 1
        sl = ndimage.find_objects(lab, max_label=best)[best - 1]
        out[i] = (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)
    return out.reshape(*m.shape[:-2], 4)


def box_iou_edges(a, b) -> np.ndarray:
    """IoU of integer-edge boxes (..., 4) vs (..., 4) (broadcast); 0 when both are empty."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    def area(e):
        return np.clip(e[..., 2] - e[..., 0], 0, None) * np.clip(e[..., 3] - e[..., 1],
                                                                           0, None)
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def lost_corloc(pred_boxes, edges, valid, threshold: float = 0.5) -> np.ndarray:
    """pred_boxes (I, ..., 4) vs expert edges (I, K, 4) with valid (I, K) → (I, ...) float:
    1.0 if IoU ≥ threshold with any valid expert box, NaN for an image without boxes."""
    p = np.asarray(pred_boxes)
    e, v = np.asarray(edges), np.asarray(valid, bool)
    if e.ndim != 3 or e.shape[-1] != 4 or v.shape != e.shape[:2] or p.shape[0] != e.shape[0]:
        raise ValueError(f"need pred_boxes (I, ..., 4), edges (I, K, 4), valid (I, K); got "
                         f"{p.shape}, {e.shape}, {v.shape}")
    extra = p.ndim - 2
    eb = e.reshape(e.shape[:1] + (1,) * extra + e.shape[1:])
    vb = v.reshape(v.shape[:1] + (1,) * extra + v.shape[1:])
    ious = box_iou_edges(p[..., None, :], eb)  # (I, ..., K)
    hit = np.any((ious >= threshold) & vb, axis=-1)
    return np.where(vb.any(axis=-1), hit.astype(np.float64), np.nan)
