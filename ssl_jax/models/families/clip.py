"""CLIP vision tower (transformers `CLIPVisionModel`; hub checkpoints are the composite
`CLIPModel`, whose vision tower sits under `vision_config` / `vision_model.`).

CLS + patches, no patch bias; a learned position table interpolated with plain torch bicubic;
a LayerNorm on the embeddings (`pre_layrnorm`) and none on last_hidden_state; pooled = the
CLS token through `post_layernorm`. quick_gelu MLPs.
"""

from __future__ import annotations

from typing import Any

import jax

from ssl_jax.models.embedding import vit_embed, vit_embed_shapes
from ssl_jax.models.keymap import (
    Entry,
    clip_style_layer_entries,
    conv,
    identity,
    layer_norm_entries,
)
from ssl_jax.models.layers import apply_layer_norm, layer_norm_shapes
from ssl_jax.models.spec import ModelInfo, ModelSpec, Preprocessing

NAME = "clip"
MODELS = (ModelInfo("clip", "openai/clip-vit-base-patch16", NAME, "CLIP ViT-B/16 vision tower"),)

# ---- config.json → spec ----------------------------------------------------------------------

MODEL_TYPE = "clip_vision_model"
COMPOSITE_TYPE = "clip"
CLASS_DEFAULTS: dict[str, Any] = dict(
    hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    num_channels=3, image_size=224, patch_size=32, hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
)
_OPENAI = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
PREPROCESSING = Preprocessing("shortest_edge", 224, (224, 224), 3, *_OPENAI)


def spec_from_hf(c: dict[str, Any], common: dict[str, Any], where: str) -> ModelSpec:
    return ModelSpec(
        **common, mlp_dim=int(c["intermediate_size"]), num_registers=0, has_cls=True,
        qkv_bias=(True, True, True), proj_bias=True, mlp_bias=True, patch_bias=False,
        layerscale=False, rope_theta=None, pre_norm=True, final_norm="none",
        pooler="cls_postnorm", preprocessing=PREPROCESSING,
    )


# ---- parameters and checkpoint names ---------------------------------------------------------

def param_shapes(spec: ModelSpec) -> dict:
    return {"embed": vit_embed_shapes(spec), "pre_norm": layer_norm_shapes(spec),
            "post_norm": layer_norm_shapes(spec)}


WRAPPER_PREFIXES = ("vision_model.",)  # CLIPModel
IGNORED_KEYS = (r"^text_model\.", r"^text_projection\.", r"^visual_projection\.", r"^logit_scale$",
                r"position_ids$")


def key_map(spec: ModelSpec) -> list[Entry]:
    d, p, c = spec.hidden_size, spec.patch_size, spec.num_channels
    n_pos = 1 + spec.pos_grid**2
    entries = [
        Entry(("embeddings.patch_embedding.weight",), ("embed", "patch", "kernel"), (d, c, p, p),
              conv),
        Entry(("embeddings.position_embedding.weight",), ("embed", "pos"), (n_pos, d), identity),
        Entry(("embeddings.class_embedding",), ("embed", "cls"), (d,), identity),
    ]
    entries += layer_norm_entries(("pre_layrnorm",), ("pre_norm",), d)
    entries += layer_norm_entries(("post_layernorm",), ("post_norm",), d)
    entries += clip_style_layer_entries(spec)
    return entries


def export_prefix(config: dict) -> str:
    """A composite CLIPModel config keeps the vision tower's keys under `vision_model.`."""
    return "vision_model." if config.get("model_type") == COMPOSITE_TYPE else ""


# ---- forward ---------------------------------------------------------------------------------

def embed(spec: ModelSpec, params: dict, pixels: jax.Array, dtype):
    x, layout = vit_embed(spec, params["embed"], pixels, dtype, antialias=False)
    return apply_layer_norm(spec, params["pre_norm"], x, dtype), layout, None


def pool(spec: ModelSpec, params: dict, x: jax.Array, dtype) -> dict:
    # last_hidden_state is the un-normed residual stream; only the pooled CLS is normed
    return {"last_hidden_state": x, "pooled": apply_layer_norm(spec, params["post_norm"], x[0], dtype)}
