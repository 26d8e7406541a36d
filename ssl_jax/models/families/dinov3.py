"""DINOv3 ViT (transformers `DINOv3ViTModel`).

CLS + registers + patches with no position table: 2-D RoPE on the patch tokens' queries and
keys (prefix tokens unrotated); no key bias (the architecture has none, so neither do we:
see `ssl_jax.models.layers.QKV`); layerscale; the final LayerNorm on every token; pooled = its
CLS token.
"""

from __future__ import annotations

from typing import Any

import jax

from ssl_jax.models.embedding import vit_embed, vit_embed_shapes
from ssl_jax.models.keymap import Entry, conv, identity, layer_entries, layer_norm_entries, reshape
from ssl_jax.models.layers import apply_layer_norm, layer_norm_shapes, rope_tables
from ssl_jax.models.spec import (
    IMAGENET_MEAN_STD,
    ConfigError,
    ModelInfo,
    ModelSpec,
    Preprocessing,
)

NAME = "dinov3"
MODELS = (ModelInfo("dinov3", "facebook/dinov3-vitb16-pretrain-lvd1689m", NAME,
                    "DINOv3 ViT-B/16, 4 registers, 2-D RoPE"),)

# ---- config.json → spec ----------------------------------------------------------------------

MODEL_TYPE = "dinov3_vit"
COMPOSITE_TYPE = None
CLASS_DEFAULTS: dict[str, Any] = dict(
    patch_size=16, hidden_size=384, intermediate_size=1536, num_hidden_layers=12,
    num_attention_heads=6, hidden_act="gelu", layer_norm_eps=1e-5, rope_theta=100.0,
    image_size=224, num_channels=3, query_bias=True, key_bias=False, value_bias=True,
    proj_bias=True, mlp_bias=True, num_register_tokens=0, use_gated_mlp=False,
)
# DINOv3's processor resizes the float pixels after rescaling
PREPROCESSING = Preprocessing("exact", (224, 224), None, 2, *IMAGENET_MEAN_STD,
                              rescale_before_resize=True)


def spec_from_hf(c: dict[str, Any], common: dict[str, Any], where: str) -> ModelSpec:
    if c.get("use_gated_mlp"):
        raise ConfigError(f"{where}: use_gated_mlp=true (SwiGLU DINOv3) is not supported")
    return ModelSpec(
        **common, mlp_dim=int(c["intermediate_size"]), num_registers=int(c["num_register_tokens"]),
        has_cls=True, qkv_bias=(bool(c["query_bias"]), bool(c["key_bias"]), bool(c["value_bias"])),
        proj_bias=bool(c["proj_bias"]), mlp_bias=bool(c["mlp_bias"]), patch_bias=True,
        layerscale=True, rope_theta=float(c["rope_theta"]), pre_norm=False, final_norm="all",
        pooler="cls", preprocessing=PREPROCESSING,
    )


# ---- parameters and checkpoint names ---------------------------------------------------------

def param_shapes(spec: ModelSpec) -> dict:
    return {"embed": vit_embed_shapes(spec, mask_token=True),
            "final_norm": layer_norm_shapes(spec)}


WRAPPER_PREFIXES: tuple[str, ...] = ()
IGNORED_KEYS = (r"^classifier\.", r"rope_embeddings\.inv_freq$")


def key_map(spec: ModelSpec) -> list[Entry]:
    d, p, c, r = spec.hidden_size, spec.patch_size, spec.num_channels, spec.num_registers
    entries = [
        Entry(("embeddings.cls_token",), ("embed", "cls"), (1, 1, d), reshape((d,))),
        Entry(("embeddings.mask_token",), ("embed", "mask_token"), (1, 1, d), reshape((d,)),
              optional=True),
        Entry(("embeddings.patch_embeddings.weight",), ("embed", "patch", "kernel"), (d, c, p, p),
              conv),
        Entry(("embeddings.patch_embeddings.bias",), ("embed", "patch", "bias"), (d,), identity),
    ]
    if r:
        entries.append(Entry(("embeddings.register_tokens",), ("embed", "registers"), (1, r, d),
                             reshape((r, d))))
    for i in range(spec.num_layers):
        stems = (f"layer.{i}", f"model.layer.{i}")
        entries += layer_entries(spec, i, {
            "norm1": tuple(f"{s}.norm1" for s in stems),
            "norm2": tuple(f"{s}.norm2" for s in stems),
            "q": tuple(f"{s}.attention.q_proj" for s in stems),
            "k": tuple(f"{s}.attention.k_proj" for s in stems),
            "v": tuple(f"{s}.attention.v_proj" for s in stems),
            "o": tuple(f"{s}.attention.o_proj" for s in stems),
            "fc1": tuple(f"{s}.mlp.up_proj" for s in stems),
            "fc2": tuple(f"{s}.mlp.down_proj" for s in stems),
            "ls1": tuple(f"{s}.layer_scale1" for s in stems),
            "ls2": tuple(f"{s}.layer_scale2" for s in stems),
        })
    entries += layer_norm_entries(("norm",), ("final_norm",), d)
    return entries


def export_prefix(config: dict) -> str:
    return ""


# ---- forward ---------------------------------------------------------------------------------

def embed(spec: ModelSpec, params: dict, pixels: jax.Array, dtype):
    """Tokens without positions, plus the RoPE tables the attention rotates with."""
    x, layout = vit_embed(spec, params["embed"], pixels, dtype)
    return x, layout, rope_tables(spec, layout.grid_h, layout.grid_w)


def pool(spec: ModelSpec, params: dict, x: jax.Array, dtype) -> dict:
    last = apply_layer_norm(spec, params["final_norm"], x, dtype)
    return {"last_hidden_state": last, "pooled": last[0]}

