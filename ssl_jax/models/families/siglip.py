"""SigLIP vision tower (transformers `SiglipVisionModel`; SigLIP 2 FixRes checkpoints use the
same architecture and model_type; hub checkpoints are the composite `SiglipModel`).

Patches only, no CLS token; a learned position table interpolated with plain torch bicubic;
the final LayerNorm (`post_layernorm`) on every token; pooled by the MAP head: one learned
probe attends over all tokens, and its attention (heads, T) is the `probe_attention` output.
"""

from __future__ import annotations

from typing import Any

import jax

from ssl_jax.models.embedding import vit_embed, vit_embed_shapes
from ssl_jax.models.keymap import (
    Entry,
    clip_style_layer_entries,
    conv,
    dense,
    heads_out,
    identity,
    layer_norm_entries,
    reshape,
)
from ssl_jax.models.layers import MAPHead, apply_layer_norm, layer_norm_shapes, map_head_shapes
from ssl_jax.models.spec import ModelInfo, ModelSpec, Preprocessing

NAME = "siglip"
MODELS = (ModelInfo("siglip2", "google/siglip2-base-patch16-224", NAME,
                    "SigLIP 2 B/16 FixRes vision tower with MAP head"),)

# ---- config.json → spec ----------------------------------------------------------------------

MODEL_TYPE = "siglip_vision_model"
COMPOSITE_TYPE = "siglip"
CLASS_DEFAULTS: dict[str, Any] = dict(
    hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    num_channels=3, image_size=224, patch_size=16, hidden_act="gelu_pytorch_tanh",
    layer_norm_eps=1e-6, vision_use_head=True,
)
_HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
PREPROCESSING = Preprocessing("exact", (224, 224), None, 2, *_HALF)
# model_types that look like this family but are not it
NOT_THIS = {
    "siglip2_vision_model": "NaFlex SigLIP 2 checkpoints are a different architecture; the "
                            "FixRes '*-patch16-224' checkpoints use model_type 'siglip'",
}
NOT_THIS["siglip2"] = NOT_THIS["siglip2_vision_model"]


def spec_from_hf(c: dict[str, Any], common: dict[str, Any], where: str) -> ModelSpec:
    return ModelSpec(
        **common, mlp_dim=int(c["intermediate_size"]), num_registers=0, has_cls=False,
        qkv_bias=(True, True, True), proj_bias=True, mlp_bias=True, patch_bias=True,
        layerscale=False, rope_theta=None, pre_norm=False, final_norm="all",
        pooler="map" if c["vision_use_head"] else "none", preprocessing=PREPROCESSING,
    )


# ---- parameters and checkpoint names ---------------------------------------------------------

def param_shapes(spec: ModelSpec) -> dict:
    shapes = {"embed": vit_embed_shapes(spec), "final_norm": layer_norm_shapes(spec)}
    if spec.pooler == "map":
        shapes["head"] = map_head_shapes(spec)
    return shapes


WRAPPER_PREFIXES = ("vision_model.",)  # SiglipModel
IGNORED_KEYS = (r"^text_model\.", r"^logit_scale$", r"^logit_bias$", r"position_ids$")


def key_map(spec: ModelSpec) -> list[Entry]:
    d, p, c = spec.hidden_size, spec.patch_size, spec.num_channels
    n_pos = spec.pos_grid**2
    entries = [
        Entry(("embeddings.patch_embedding.weight",), ("embed", "patch", "kernel"), (d, c, p, p),
              conv),
        Entry(("embeddings.position_embedding.weight",), ("embed", "pos"), (n_pos, d), identity),
        Entry(("embeddings.patch_embedding.bias",), ("embed", "patch", "bias"), (d,), identity),
    ]
    entries += layer_norm_entries(("post_layernorm",), ("final_norm",), d)
    entries += clip_style_layer_entries(spec)
    if spec.pooler == "map":
        entries += _map_head_entries(spec)
    return entries


def _map_head_entries(spec: ModelSpec) -> list[Entry]:
    d, h, dh, m = spec.hidden_size, spec.num_heads, spec.head_dim, spec.mlp_dim
    entries = [Entry(("head.probe",), ("head", "probe"), (1, 1, d), reshape((1, d)))]
    # torch.nn.MultiheadAttention packs [Wq; Wk; Wv] row-wise into in_proj_weight.
    for slot, name in enumerate(("query", "key", "value")):
        rows = slice(slot * d, (slot + 1) * d)
        entries.append(Entry(("head.attention.in_proj_weight",), ("head", name, "kernel"),
                             (3 * d, d), lambda a, rows=rows: a[rows].T.reshape(d, h, dh)))
        entries.append(Entry(("head.attention.in_proj_bias",), ("head", name, "bias"), (3 * d,),
                             lambda a, rows=rows: a[rows].reshape(h, dh)))
    entries += [
        Entry(("head.attention.out_proj.weight",), ("head", "out", "kernel"), (d, d),
              heads_out(d, h, dh)),
        Entry(("head.attention.out_proj.bias",), ("head", "out", "bias"), (d,), identity),
        Entry(("head.mlp.fc1.weight",), ("head", "mlp", "fc1", "kernel"), (m, d), dense),
        Entry(("head.mlp.fc1.bias",), ("head", "mlp", "fc1", "bias"), (m,), identity),
        Entry(("head.mlp.fc2.weight",), ("head", "mlp", "fc2", "kernel"), (d, m), dense),
        Entry(("head.mlp.fc2.bias",), ("head", "mlp", "fc2", "bias"), (d,), identity),
    ]
    entries += layer_norm_entries(("head.layernorm",), ("head", "norm"), d)
    return entries


def export_prefix(config: dict) -> str:
    """A composite SiglipModel config keeps the vision tower's keys under `vision_model.`."""
    return "vision_model." if config.get("model_type") == COMPOSITE_TYPE else ""


# ---- forward ---------------------------------------------------------------------------------

def embed(spec: ModelSpec, params: dict, pixels: jax.Array, dtype):
    x, layout = vit_embed(spec, params["embed"], pixels, dtype, antialias=False)
    return x, layout, None


def pool(spec: ModelSpec, params: dict, x: jax.Array, dtype) -> dict:
    last = apply_layer_norm(spec, params["final_norm"], x, dtype)
    if spec.pooler != "map":
        return {"last_hidden_state": last}
    pooled, probe = MAPHead(spec, dtype).apply({"params": params["head"]}, last)
    return {"last_hidden_state": last, "pooled": pooled, "probe_attention": probe}
