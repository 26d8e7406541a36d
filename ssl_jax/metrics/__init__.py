"""Alignment metrics between attention heatmaps and expert boxes (SPEC R4.1–R4.3), the
localisation metrics the original lacks, aggregation helpers and baseline maps (R4.4).

Entry point for the study: `alignment_grid(maps (I, ..., H, W), masks (I, H, W), targets)`
— IoU at 7 percentiles, coverage, pointing, MSE and KL for every map in one jitted call.

`registry` declares every metric once: its function, which way is better, what it needs
(mask, soft target, boxes, percentile, tolerance) and its empty-mask value; the grid, the
study's evaluate / compare, shift and the figures read it. The grid and the standalone
functions share one per-map kernel per metric.

`degenerate(maps)` (True where a map has a non-finite value, no positive mass or is
constant) is the rule by which every metric here returns NaN instead of a sanitised,
tie-broken number; the aggregation helpers skip NaN and report the count (``excluded``).
"""

from ssl_jax.metrics.aggregate import (
    SegmentStats,
    Summary,
    by_feature,
    by_label_any,
    by_style,
    describe,
    lower_median,
    segment_stats,
)
from ssl_jax.metrics.alignment import (
    EPS,
    argmax_yx,
    box_iou,
    box_masks,
    box_pointing,
    corloc,
    coverage,
    degenerate,
    descending_order,
    dilate,
    iou,
    iou_at_percentiles,
    pixel_ranks,
    pointing_hit,
    ranking_values,
    sanitize,
    threshold_counts,
    threshold_masks,
    top_k_pointing,
    top_order,
)
from ssl_jax.metrics.baselines import (
    N_RANDOM_TRIALS,
    center_gaussian,
    grey_resized,
    image_seed,
    random_maps,
    random_maps_for_ids,
    saliency_prior,
    sobel_edges,
    sobel_magnitude,
)
from ssl_jax.metrics.continuous import (
    EMD_GRID_SIZE,
    emd,
    emd_grids,
    gaussian_target,
    gaussian_targets,
    kl_from_terms,
    kl_target_attention,
    mse,
    normalize_transport_weights,
    target_terms,
    wasserstein1,
)
from ssl_jax.metrics.grid import PERCENTILES, alignment_grid, alignment_metrics
from ssl_jax.metrics.localisation import (
    box_from_mask,
    box_iou_edges,
    jaccard,
    lost_corloc,
    mass_jaccard,
    mass_threshold_mask,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
    roc_auc,
)

__all__ = [
    "EMD_GRID_SIZE", "EPS", "N_RANDOM_TRIALS", "PERCENTILES", "SegmentStats", "Summary",
    "alignment_grid", "alignment_metrics", "argmax_yx", "box_from_mask", "box_iou",
    "box_iou_edges", "box_masks", "box_pointing", "by_feature", "by_label_any", "by_style",
    "center_gaussian", "corloc", "coverage", "degenerate", "descending_order", "describe",
    "dilate", "emd", "emd_grids", "gaussian_target", "gaussian_targets", "grey_resized",
    "image_seed", "iou", "iou_at_percentiles", "jaccard", "kl_from_terms", "kl_target_attention",
    "lost_corloc", "lower_median", "mass_jaccard", "mass_threshold_mask", "mse",
    "normalize_transport_weights", "pixel_ranks", "pointing_hit", "random_maps",
    "random_maps_for_ids", "ranking_values", "relevance_mass_accuracy", "relevance_rank_accuracy",
    "roc_auc", "saliency_prior", "sanitize", "segment_stats", "sobel_edges", "sobel_magnitude",
    "target_terms", "threshold_counts", "threshold_masks", "top_k_pointing", "top_order",
    "wasserstein1",
]
