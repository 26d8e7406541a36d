"""The study's metric grid in one jitted call: IoU at several percentiles, coverage, the
pointing game, MSE and KL against the soft target — for maps (I, ..., H, W) of every image ×
layer × method × … at once.

Which metrics and in which column order come from the metric registry (`registry`, the
metrics marked ``in_grid``); each is computed by the per-map kernel its standalone function
uses (`alignment._iou_ranked`, `_coverage`, `_first_max_hit`, `continuous._mse`,
`_kl_terms`), on one image's block of flat maps at a time.

Per image, every map is ranked once — float32 maps by one stable `jax.lax.top_k` (k of the
lowest percentile), 16-bit maps by one packed integer sort (`alignment._packed16_order`) —
and the intersections at all percentiles are block sums of the mask gathered in rank order.
The union mask, its dilation, the soft target's distribution and Σ p log p are computed once
per image and shared by all its maps. Images are processed by `jax.lax.map` one at a time
(`batch_size` 1, the default: a plain scan over images, each step vmapped over that image's
maps) or in vmapped chunks of `batch_size` images (memory ∝ batch_size × maps per image).
Maps may be float16 (upcast per chunk), so a 16,680-map grid at 224² needs 1.7 GB of input
and a few hundred MB of temporaries.

Degenerate maps (`alignment.degenerate`: any non-finite value, no positive mass, or
constant) get NaN in every metric (IoU at every percentile, coverage, pointing, MSE, KL) —
one flag per map, `where`d into the outputs; "annotation_area" is the mask's and stays. The
original sanitised such maps and tie-broke them into numbers (see `alignment`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.metrics.alignment import (
    _check_spatial,
    _coverage,
    _first_max_hit,
    _invalid,
    _iou_ranked,
    dilate,
    ranking_values,
    sanitize,
    threshold_counts,
    top_order,
)
from ssl_jax.metrics.continuous import _kl_terms, _mse, target_terms
from ssl_jax.metrics.registry import METRICS, grid_metrics

PERCENTILES = (90, 85, 80, 75, 70, 60, 50)


def _percentile_key(p) -> str:
    return METRICS["iou"].column(p)


@partial(jax.jit, static_argnames=("percentiles", "tolerance", "batch_size", "with_target"))
def _grid(maps, masks, targets, percentiles, tolerance, batch_size, with_target):
    i, *mid, h, w = maps.shape
    n = h * w
    r = int(np.prod(mid)) if mid else 1
    ks = threshold_counts(n, percentiles)
    kmax = int(ks.max())
    maps = maps.reshape(i, r, n)
    g_all = masks.reshape(i, n)
    gd_all = dilate(masks, tolerance).reshape(i, n)
    if with_target:
        t = targets.reshape(i, h, w)
        p_all, plogp_all = target_terms(t)
        p_all = p_all.reshape(i, n)
        t_all = jnp.clip(sanitize(t), 0, 1).reshape(i, n)
    else:
        p_all = t_all = jnp.zeros((i, 1), jnp.float32)
        plogp_all = jnp.zeros((i,), jnp.float32)

    # each grid metric from the per-map kernel of its own module, on one image's (r, n)
    # block of flat maps and the pieces shared by them (computed once per image)
    kernels = {
        "iou": lambda x: _iou_ranked(x["g"][x["order"]], x["gc"], ks),
        "coverage": lambda x: _coverage(x["a"], x["g"], -1),
        "pointing": lambda x: _first_max_hit(x["v"], x["gd"]).astype(jnp.float32),
        "mse": lambda x: _mse(x["a"], x["t"], -1),
        "kl": lambda x: _kl_terms(x["a"], x["p"], x["plogp"], -1),
    }
    metrics = grid_metrics(with_target)

    def one(args):
        m, g, gd, p, plogp, tg = args
        x = {"g": g, "gd": gd, "p": p, "plogp": plogp, "t": tg,
             "v": ranking_values(m),  # (r, n) float32
             "order": top_order(m.reshape(r, h, w), kmax),  # packed sort for 16-bit maps
             "gc": jnp.sum(g, dtype=jnp.int32).astype(jnp.float32),
             "a": sanitize(m)}
        bad = _invalid(m)  # (r,) degenerate maps → NaN in every metric
        nan = jnp.float32(jnp.nan)
        out = {}
        for metric in metrics:
            v = kernels[metric.name](x)
            out[metric.name] = jnp.where(bad[:, None] if v.ndim == 2 else bad, nan, v)
        out["annotation_area"] = jnp.broadcast_to(x["gc"] / n, (r,))
        return out

    res = jax.lax.map(one, (maps, g_all, gd_all, p_all, plogp_all, t_all),
                      batch_size=batch_size if batch_size > 1 else None)
    out = {}
    for metric in metrics:
        if metric.per_percentile:
            for j, p in enumerate(percentiles):
                out[metric.column(p)] = res[metric.name][..., j].reshape(i, *mid)
        else:
            out[metric.column()] = res[metric.name].reshape(i, *mid)
    out["annotation_area"] = res["annotation_area"].reshape(i, *mid)
    return out


def alignment_grid(maps, masks, targets=None, percentiles: Sequence[float] = PERCENTILES, *,
                   tolerance: int = 0, batch_size: int = 1) -> dict[str, jax.Array]:
    """Every per-map metric in one jitted call.

    maps (I, ..., H, W) float (float16 accepted), masks (I, H, W) bool union masks, targets
    (I, H, W) soft Gaussian targets or None (then no "mse"/"kl"). Returns {name: (I, ...)}:
    "iou@<p>" per percentile, "coverage", "pointing" (1.0 hit, tolerance in px),
    "annotation_area", "mse", "kl" — NaN (but "annotation_area") for a degenerate map.
    `batch_size` images are processed per step.
    """
    maps = jnp.asarray(maps)
    masks = jnp.asarray(masks)
    if maps.ndim < 3 or masks.ndim != 3:
        raise ValueError(f"need maps (I, ..., H, W) and masks (I, H, W); got maps "
                         f"{maps.shape}, masks {masks.shape}")
    _check_spatial(maps, masks, broadcast=False)
    if maps.shape[0] != masks.shape[0]:
        raise ValueError(f"maps have {maps.shape[0]} images but masks have {masks.shape[0]}")
    if masks.dtype != bool:
        raise ValueError(f"masks must be bool, got {masks.dtype}")
    if not jnp.issubdtype(maps.dtype, jnp.floating):
        maps = maps.astype(jnp.float32)
    if targets is not None:
        targets = jnp.asarray(targets, jnp.float32)
        if targets.shape != masks.shape:
            raise ValueError(f"targets must be (I, H, W) = {masks.shape}, got {targets.shape}")
    pct = tuple(float(p) if not float(p).is_integer() else int(p)
                for p in np.atleast_1d(np.asarray(percentiles, dtype=np.float64)))
    threshold_counts(maps.shape[-2] * maps.shape[-1], pct)  # validates
    if tolerance < 0 or int(tolerance) != tolerance:
        raise ValueError(f"tolerance must be a non-negative integer of pixels, got {tolerance}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    return _grid(maps, masks, targets if targets is not None else jnp.zeros((), jnp.float32),
                 pct, int(tolerance), int(batch_size), targets is not None)


def alignment_metrics(maps, gt, target, percentiles: Sequence[float],
                      tolerance: int = 0) -> dict[str, jax.Array]:
    """Compatibility name for `alignment_grid(maps, gt, target, percentiles, tolerance=…)`."""
    return alignment_grid(maps, gt, target, percentiles, tolerance=tolerance)
