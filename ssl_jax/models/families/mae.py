"""MAE ViT encoder (transformers `ViTMAEModel`, run without masking).

CLS + patches; a learned position table interpolated with plain torch bicubic
(`interpolate_pos_encoding=True`); the final LayerNorm on every token; no pooler.
"""

from __future__ import annotations

from typing import Any

import jax

from ssl_jax.models.embedding import vit_embed, vit_embed_shapes
from ssl_jax.models.keymap import Entry, conv, identity, layer_entries, layer_norm_entries, reshape
from ssl_jax.models.layers import apply_layer_norm, layer_norm_shapes
from ssl_jax.models.spec import IMAGENET_MEAN_STD, ModelInfo, ModelSpec, Preprocessing

NAME = "mae"
MODELS = (ModelInfo("mae", "facebook/vit-mae-base", NAME, "MAE ViT-B/16 encoder (no masking)"),)

# ---- config.json → spec ----------------------------------------------------------------------

MODEL_TYPE = "vit_mae"
COMPOSITE_TYPE = None
CLASS_DEFAULTS: dict[str, Any] = dict(
    hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
    hidden_act="gelu", layer_norm_eps=1e-12, image_size=224, patch_size=16, num_channels=3,
    qkv_bias=True,
)
PREPROCESSING = Preprocessing("exact", (224, 224), None, 2, *IMAGENET_MEAN_STD)


def spec_from_hf(c: dict[str, Any], common: dict[str, Any], where: str) -> ModelSpec:
    qkv = bool(c["qkv_bias"])
    return ModelSpec(
        **common, mlp_dim=int(c["intermediate_size"]), num_registers=0, has_cls=True,
        qkv_bias=(qkv, qkv, qkv), proj_bias=True, mlp_bias=True, patch_bias=True,
        layerscale=False, rope_theta=None, pre_norm=False, final_norm="all", pooler="none",
        preprocessing=PREPROCESSING,
    )


# ---- parameters and checkpoint names ---------------------------------------------------------

def param_shapes(spec: ModelSpec) -> dict:
    return {"embed": vit_embed_shapes(spec), "final_norm": layer_norm_shapes(spec)}


WRAPPER_PREFIXES = ("vit.",)  # ViTMAEForPreTraining
IGNORED_KEYS = (r"^decoder\.",)


def key_map(spec: ModelSpec) -> list[Entry]:
    d, p, c = spec.hidden_size, spec.patch_size, spec.num_channels
    n_pos = 1 + spec.pos_grid**2
    entries = [
        Entry(("embeddings.cls_token",), ("embed", "cls"), (1, 1, d), reshape((d,))),
        Entry(("embeddings.position_embeddings",), ("embed", "pos"), (1, n_pos, d),
              reshape((n_pos, d))),
        Entry(("embeddings.patch_embeddings.projection.weight",), ("embed", "patch", "kernel"),
              (d, c, p, p), conv),
        Entry(("embeddings.patch_embeddings.projection.bias",), ("embed", "patch", "bias"), (d,),
              identity),
    ]
    for i in range(spec.num_layers):
        b, v5 = f"encoder.layer.{i}", f"layers.{i}"
        entries += layer_entries(spec, i, {
            "norm1": (f"{b}.layernorm_before", f"{v5}.layernorm_before"),
            "norm2": (f"{b}.layernorm_after", f"{v5}.layernorm_after"),
            "q": (f"{b}.attention.attention.query", f"{v5}.attention.q_proj"),
            "k": (f"{b}.attention.attention.key", f"{v5}.attention.k_proj"),
            "v": (f"{b}.attention.attention.value", f"{v5}.attention.v_proj"),
            "o": (f"{b}.attention.output.dense", f"{v5}.attention.o_proj"),
            "fc1": (f"{b}.intermediate.dense", f"{v5}.mlp.fc1"),
            "fc2": (f"{b}.output.dense", f"{v5}.mlp.fc2"),
        })
    entries += layer_norm_entries(("layernorm",), ("final_norm",), d)
    return entries


def export_prefix(config: dict) -> str:
    return ""


# ---- forward ---------------------------------------------------------------------------------

def embed(spec: ModelSpec, params: dict, pixels: jax.Array, dtype):
    x, layout = vit_embed(spec, params["embed"], pixels, dtype, antialias=False)
    return x, layout, None


def pool(spec: ModelSpec, params: dict, x: jax.Array, dtype) -> dict:
    return {"last_hidden_state": apply_layer_norm(spec, params["final_norm"], x, dtype)}
