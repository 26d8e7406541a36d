"""Aggregation of per-image / per-box metrics by integer labels (feature type, style), NaN-aware
and vectorised with segment sums.

NaN is "no value" throughout (an empty mask, a padding box, a degenerate map — see
`alignment.degenerate`): every helper skips it and reports how many it skipped
(``excluded``), so a table can say "n = 130 (9 degenerate maps excluded)".

* `segment_stats(values, labels, num_segments)`: values (N, ...) with labels (N,) →
  mean, std (ddof 1; 0 for a single value, as the original's ``aggregate_by_feature_type``),
  count, excluded — NaN (non-finite) values and labels < 0 are skipped; ``excluded`` counts
  the skipped non-finite values of each segment (labels < 0, e.g. padding, are not
  counted); an empty segment has mean NaN, count 0.
* `by_feature(box_values, labels, valid, num_labels)`: box metrics (I, ..., K) (e.g.
  `box_iou`) with element labels (I, K) → stats per label (num_labels, ...).
* `by_style(values, styles, num_styles)`: values (I, ...) with styles either (I,) ints
  (first-style rule; −1 = unlabeled) or (I, S) bool membership (every-mapped-style rule: an
  image counts under each of its styles).
* `by_label_any(box_hits, labels, valid, num_labels)`: OR over an image's boxes that share a
  label (per-feature pointing game) → (I, ..., num_labels) float, NaN where the image has no
  box of that label or a box of that label has a NaN hit (a degenerate map).
* `describe(values, axis)`: mean, std, population std, lower median, count, excluded
  (non-finite values skipped).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.metrics.alignment import jit_static


class SegmentStats(NamedTuple):
    mean: jax.Array
    std: jax.Array
    count: jax.Array  # values used
    excluded: jax.Array  # non-finite values skipped (degenerate maps, …)


@jit_static("num_segments")
def segment_stats(values, labels, num_segments: int) -> SegmentStats:
    v = jnp.asarray(values, jnp.float32)
    lab = jnp.asarray(labels, jnp.int32)
    if lab.ndim != 1 or v.shape[:1] != lab.shape:
        raise ValueError(f"labels must be (N,) for values (N, ...); got labels {lab.shape}, "
                         f"values {v.shape}")
    labelled = (lab >= 0).reshape((-1,) + (1,) * (v.ndim - 1))
    ok = jnp.isfinite(v) & labelled
    seg = jnp.where(lab >= 0, lab, num_segments)  # out-of-range ids are dropped
    x = jnp.where(ok, v, 0.0)
    w = ok.astype(jnp.float32)
    cnt = jax.ops.segment_sum(w, seg, num_segments)
    s1 = jax.ops.segment_sum(x, seg, num_segments)
    mean = jnp.where(cnt > 0, s1 / jnp.maximum(cnt, 1), jnp.nan)
    dev = jnp.where(ok, v - mean[jnp.clip(seg, 0, num_segments - 1)], 0.0)
    s2 = jax.ops.segment_sum(dev * dev, seg, num_segments)
    std = jnp.where(cnt > 1, jnp.sqrt(s2 / jnp.maximum(cnt - 1, 1)),
                    jnp.where(cnt == 1, 0.0, jnp.nan))
    skipped = jax.ops.segment_sum((~jnp.isfinite(v) & labelled).astype(jnp.int32), seg,
                                  num_segments)
    return SegmentStats(mean, std, cnt, skipped)


def by_feature(box_values, labels, valid, num_labels: int) -> SegmentStats:
    bv = jnp.asarray(box_values, jnp.float32)
    lab, val = np.asarray(labels), np.asarray(valid, bool)
    if lab.ndim != 2 or lab.shape != val.shape or bv.shape[0] != lab.shape[0] \
            or bv.shape[-1] != lab.shape[1]:
        raise ValueError(f"need box values (I, ..., K), labels and valid (I, K); got "
                         f"{bv.shape}, {lab.shape}, {val.shape}")
    flat = jnp.moveaxis(bv, -1, 1).reshape(lab.size, *bv.shape[1:-1])
    lab = np.where(val, lab, -1).reshape(-1)
    return segment_stats(flat, lab, num_labels)


def by_style(values, styles, num_styles: int) -> SegmentStats:
    v = jnp.asarray(values, jnp.float32)
    s = np.asarray(styles)
    if s.ndim == 1:
        if s.shape[0] != v.shape[0]:
            raise ValueError(f"styles {s.shape} do not match values {v.shape}")
        return segment_stats(v, s, num_styles)
    if s.ndim != 2 or s.shape[0] != v.shape[0] or s.shape[1] != num_styles:
        raise ValueError(f"style membership must be (I, {num_styles}) bool, got {s.shape}")
    idx_i, idx_s = np.nonzero(s.astype(bool))
    return segment_stats(v[idx_i], idx_s, num_styles)


@jit_static("num_labels")
def by_label_any(box_hits, labels, valid, num_labels: int) -> jax.Array:
    h = jnp.asarray(box_hits, jnp.float32)
    lab, val = jnp.asarray(labels, jnp.int32), jnp.asarray(valid, bool)
    if lab.ndim != 2 or lab.shape != val.shape or h.shape[0] != lab.shape[0] \
            or h.shape[-1] != lab.shape[1]:
        raise ValueError(f"need box hits (I, ..., K), labels and valid (I, K); got "
                         f"{h.shape}, {lab.shape}, {val.shape}")
    onehot = (lab[..., None] == jnp.arange(num_labels)) & val[..., None]  # (I, K, L)
    extra = h.ndim - 2
    oh = onehot.reshape(onehot.shape[:1] + (1,) * extra + onehot.shape[1:])
    hit = jnp.any(oh & (jnp.nan_to_num(h, nan=0.0) > 0.5)[..., None], axis=-2)
    present = jnp.any(oh, axis=-2)
    undefined = jnp.any(oh & jnp.isnan(h)[..., None], axis=-2)
    return jnp.where(present & ~undefined, hit.astype(jnp.float32), jnp.nan)


class Summary(NamedTuple):
    mean: jax.Array
    std: jax.Array  # ddof 1 (the original's per-metric summaries)
    std_pop: jax.Array  # ddof 0 (the original's baseline summaries)
    median: jax.Array  # lower median (torch.median)
    count: jax.Array  # values used
    excluded: jax.Array  # non-finite values skipped (degenerate maps, …)


@jit_static("axis")
def describe(values, axis: int = 0) -> Summary:
    """Dataset-level summary along `axis`, NaN skipped (the original's ``compute_batch_iou``
    aggregates: mean, unbiased std, lower median; plus the population std of baselines)."""
    v = jnp.moveaxis(jnp.asarray(values, jnp.float32), axis, -1)
    ok = jnp.isfinite(v)
    cnt = jnp.sum(ok, axis=-1)
    mean = jnp.sum(jnp.where(ok, v, 0.0), -1) / jnp.maximum(cnt, 1)
    ss = jnp.sum(jnp.where(ok, (v - mean[..., None]) ** 2, 0.0), -1)
    srt = jnp.sort(jnp.where(ok, v, jnp.inf), axis=-1)  # NaN → +inf, sorted last
    med = jnp.take_along_axis(srt, jnp.maximum((cnt - 1) // 2, 0)[..., None], axis=-1)[..., 0]
    nan = jnp.float32(jnp.nan)
    return Summary(jnp.where(cnt > 0, mean, nan),
                   jnp.where(cnt > 1, jnp.sqrt(ss / jnp.maximum(cnt - 1, 1)), nan),
                   jnp.where(cnt > 0, jnp.sqrt(ss / jnp.maximum(cnt, 1)), nan),
                   jnp.where(cnt > 0, med, nan), cnt, jnp.sum(~ok, axis=-1))


@jit_static("axis")
def lower_median(values, axis: int = 0) -> jax.Array:
    """torch.median semantics (the lower of the two middle values for even counts) over the
    finite values; NaN where there are none (`describe` also reports how many it skipped)."""
    return describe(values, axis).median
