"""Alignment metrics between attention heatmaps and expert boxes (SPEC R4.1-R4.3) and
baseline maps (R4.4)."""

from .alignment import (
    alignment_metrics,
    coverage,
    descending_order,
    gaussian_target,
    iou_at_percentiles,
    kl_target_attention,
    mse,
    pointing_hit,
    threshold_counts,
    threshold_masks,
)
from .baselines import center_gaussian, random_maps, saliency_prior, sobel_edges

__all__ = [
    "alignment_metrics", "center_gaussian", "coverage", "descending_order", "gaussian_target",
    "iou_at_percentiles", "kl_target_attention", "mse", "pointing_hit", "random_maps",
    "saliency_prior", "sobel_edges", "threshold_counts", "threshold_masks",
]
