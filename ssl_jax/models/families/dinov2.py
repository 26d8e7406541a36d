"""DINOv2 with registers (transformers `Dinov2WithRegistersModel`).

CLS + registers + patches; a learned position table interpolated bicubically *with
antialias* (transformers always resamples it, even at the trained size); registers are
inserted after the position embedding, so they get none; layerscale; the final LayerNorm on
every token; pooled = its CLS token.
"""

from __future__ import annotations

from typing import Any

import jax

from ssl_jax.models.embedding import vit_embed, vit_embed_shapes
from ssl_jax.models.keymap import Entry, conv, identity, layer_entries, layer_norm_entries, reshape
from ssl_jax.models.layers import apply_layer_norm, layer_norm_shapes
from ssl_jax.models.spec import (
    IMAGENET_MEAN_STD,
    ConfigError,
    ModelInfo,
    ModelSpec,
    Preprocessing,
    TokenLayout,
)

NAME = "dinov2"
MODELS = (ModelInfo("dinov2", "facebook/dinov2-with-registers-base", NAME,
                    "DINOv2 ViT-B/14 with 4 registers"),)

# ---- config.json → spec ----------------------------------------------------------------------

MODEL_TYPE = "dinov2_with_registers"
COMPOSITE_TYPE = None
# transformers' config-class defaults for the keys read here (hub configs omit keys equal to them)
CLASS_DEFAULTS: dict[str, Any] = dict(
    hidden_size=768, num_hidden_layers=12, num_attention_heads=12, mlp_ratio=4,
    hidden_act="gelu", layer_norm_eps=1e-6, image_size=224, patch_size=16, num_channels=3,
    qkv_bias=True, num_register_tokens=4, use_swiglu_ffn=False,
)
# the checkpoint's processor (SPEC A6), used when a folder carries no preprocessor_config.json
PREPROCESSING = Preprocessing("shortest_edge", 256, (224, 224), 3, *IMAGENET_MEAN_STD)


def spec_from_hf(c: dict[str, Any], common: dict[str, Any], where: str) -> ModelSpec:
    if c.get("use_swiglu_ffn"):
        raise ConfigError(f"{where}: use_swiglu_ffn=true (ViT-g) is not supported")
    qkv = bool(c["qkv_bias"])
    return ModelSpec(
        **common, mlp_dim=int(common["hidden_size"] * c["mlp_ratio"]),
        num_registers=int(c["num_register_tokens"]), has_cls=True, qkv_bias=(qkv, qkv, qkv),
        proj_bias=True, mlp_bias=True, patch_bias=True, layerscale=True, rope_theta=None,
        pre_norm=False, final_norm="all", pooler="cls", preprocessing=PREPROCESSING,
    )


# ---- parameters and checkpoint names ---------------------------------------------------------

def param_shapes(spec: ModelSpec) -> dict:
    """Everything outside the layer stack: embeddings first, then the final norm."""
    return {"embed": vit_embed_shapes(spec, mask_token=True),
            "final_norm": layer_norm_shapes(spec)}


WRAPPER_PREFIXES = ("dinov2_with_registers.",)  # Dinov2WithRegistersForImageClassification
IGNORED_KEYS = (r"^classifier\.",)


def key_map(spec: ModelSpec) -> list[Entry]:
    d, p, c, r = spec.hidden_size, spec.patch_size, spec.num_channels, spec.num_registers
    n_pos = 1 + spec.pos_grid**2
    entries = [
        Entry(("embeddings.cls_token",), ("embed", "cls"), (1, 1, d), reshape((d,))),
        Entry(("embeddings.mask_token",), ("embed", "mask_token"), (1, d), reshape((d,)),
              optional=True),
        Entry(("embeddings.position_embeddings",), ("embed", "pos"), (1, n_pos, d),
              reshape((n_pos, d))),
        Entry(("embeddings.patch_embeddings.projection.weight",), ("embed", "patch", "kernel"),
              (d, c, p, p), conv),
        Entry(("embeddings.patch_embeddings.projection.bias",), ("embed", "patch", "bias"), (d,),
              identity),
    ]
    if r:
        entries.append(Entry(("embeddings.register_tokens",), ("embed", "registers"), (1, r, d),
                             reshape((r, d))))
    for i in range(spec.num_layers):
        b = f"encoder.layer.{i}"
        entries += layer_entries(spec, i, {
            "norm1": (f"{b}.norm1",), "norm2": (f"{b}.norm2",),
            "q": (f"{b}.attention.attention.query", f"{b}.attention.q_proj"),
            "k": (f"{b}.attention.attention.key", f"{b}.attention.k_proj"),
            "v": (f"{b}.attention.attention.value", f"{b}.attention.v_proj"),
            "o": (f"{b}.attention.output.dense", f"{b}.attention.o_proj"),
            "fc1": (f"{b}.mlp.fc1",), "fc2": (f"{b}.mlp.fc2",),
            "ls1": (f"{b}.layer_scale1",), "ls2": (f"{b}.layer_scale2",),
        })
    entries += layer_norm_entries(("layernorm",), ("final_norm",), d)
    return entries


def export_prefix(config: dict) -> str:
    """The prefix of the vision tower's keys in a checkpoint written for `config`."""
    return ""


# ---- forward ---------------------------------------------------------------------------------

def embed(spec: ModelSpec, params: dict, pixels: jax.Array, dtype) -> tuple[jax.Array, TokenLayout, None]:
    x, layout = vit_embed(spec, params["embed"], pixels, dtype, antialias=True)
    return x, layout, None


def pool(spec: ModelSpec, params: dict, x: jax.Array, dtype) -> dict:
    last = apply_layer_norm(spec, params["final_norm"], x, dtype)
    return {"last_hidden_state": last, "pooled": last[0]}
