"""Attention maps and attributions on the patch grid (SPEC R2).

maps: CLS / mean / MAP-probe maps, per head or head-fused; rollout: Abnar & Zuidema rollout
(also fused into the forward pass, `forward(..., attentions="rollout")`); gradients:
Grad-CAM, attention × gradient (Chefer et al. 2021), gradient saliency and SmoothGrad;
heatmap: upsampling, min-max normalisation and the original-image frame.
"""

from .gradients import (
    attention_gradient,
    embedding,
    grad_cam,
    gradient_saliency,
    relevance_from,
    smoothgrad,
    target_score,
)
from .heatmap import minmax_normalize, to_heatmap, to_original_frame, upsample
from .maps import (
    FUSIONS,
    attention_map,
    cls_map,
    cls_row_map,
    fuse_heads,
    mean_map,
    probe_map,
    select_heads,
    tokens_to_grid,
)
from .rollout import (
    RolloutOptions,
    layer_transition,
    rollout,
    rollout_cls_rows,
    rollout_map,
    rollout_step,
)

__all__ = [
    "FUSIONS", "RolloutOptions", "attention_gradient", "attention_map", "cls_map",
    "cls_row_map", "embedding", "fuse_heads", "grad_cam", "gradient_saliency",
    "layer_transition", "mean_map", "minmax_normalize", "probe_map", "relevance_from",
    "rollout", "rollout_cls_rows", "rollout_map", "rollout_step", "select_heads",
    "smoothgrad", "target_score", "to_heatmap", "to_original_frame", "tokens_to_grid",
    "upsample",
]
