"""Attention maps and attributions on the patch grid (SPEC R2).

maps: CLS / mean / MAP-probe maps, per head or head-fused; methods: `attention_map`, from a
forward output to maps; registry: the study's map methods (which models have each, the
forward mode it reads, each model's default); rollout: Abnar & Zuidema rollout (also fused
into the forward pass, `forward(..., attentions="rollout")`); gradients:
Grad-CAM, attention × gradient (Chefer et al. 2021), gradient saliency and SmoothGrad;
heatmap: upsampling, min-max normalisation and the original-image frame.
"""

from ssl_jax.attention.gradients import (
    attention_gradient,
    embedding,
    grad_cam,
    gradient_saliency,
    relevance_from,
    smoothgrad,
    target_score,
)
from ssl_jax.attention.heatmap import minmax_normalize, to_heatmap, to_original_frame, upsample
from ssl_jax.attention.maps import (
    cls_map,
    cls_row_map,
    fuse_heads,
    mean_map,
    probe_map,
    tokens_to_grid,
)
from ssl_jax.attention.methods import attention_map
from ssl_jax.attention.registry import (
    MAP_METHODS,
    METHOD_NAMES,
    MapMethod,
    applicable_methods,
    default_method,
    map_method,
    per_head_method,
)
from ssl_jax.attention.rollout import (
    RolloutOptions,
    rollout,
    rollout_cls_rows,
    rollout_map,
    rollout_step,
)
from ssl_jax.models.fusion import FUSIONS, layer_transition, select_heads

__all__ = [
    "FUSIONS", "MAP_METHODS", "METHOD_NAMES", "MapMethod", "RolloutOptions",
    "applicable_methods", "attention_gradient", "attention_map", "cls_map", "cls_row_map",
    "default_method", "embedding", "fuse_heads", "grad_cam", "gradient_saliency",
    "layer_transition", "map_method", "mean_map", "minmax_normalize", "per_head_method",
    "probe_map", "relevance_from", "rollout", "rollout_cls_rows", "rollout_map",
    "rollout_step", "select_heads", "smoothgrad", "target_score", "to_heatmap",
    "to_original_frame", "tokens_to_grid", "upsample",
]
