"""The classifier: a linear head on the CLS token (SigLIP: the MAP head's pooled output)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ssl_jax.models.encoder import encode
from ssl_jax.models.spec import ModelSpec
from ssl_jax.train.lora import LoraConfig, adapted, inject


def feature_kind(spec: ModelSpec) -> str:
    """What the head reads: the pooled output for MAP-head models (SigLIP), else the CLS row of
    last_hidden_state (after the final norm for DINOv2/DINOv3/MAE; CLIP: before its
    post-layernorm, as the original study does)."""
    if spec.pooler == "map":
        return "pooled"
    if not spec.has_cls:
        raise ValueError(f"{spec.family}: no CLS token and no pooled output to classify")
    return "cls"


def init_head(key: jax.Array, dim: int, num_classes: int) -> dict:
    """torch.nn.Linear's default init: weight and bias ~ U(±1/sqrt(dim)); kernel (dim, C)."""
    kw, kb = jax.random.split(key)
    bound = 1.0 / jnp.sqrt(jnp.float32(dim))
    return {"kernel": jax.random.uniform(kw, (dim, num_classes), jnp.float32, -bound, bound),
            "bias": jax.random.uniform(kb, (num_classes,), jnp.float32, -bound, bound)}


def features(spec: ModelSpec, backbone: dict, pixels: jax.Array, *, adapters: dict | None = None,
             lora: LoraConfig | None = None, key: jax.Array | None = None,
             dtype=jnp.float32) -> jax.Array:
    """Classifier input (D,) for one image (H, W, C). With adapters, LoRA is applied in the
    forward (key: LoRA dropout randomness; None = evaluation, no dropout)."""
    params = backbone if adapters is None else inject(backbone, adapters)
    with adapted(lora if adapters is not None else None, key):
        out = encode(spec, params, pixels, dtype=dtype)
    if feature_kind(spec) == "pooled":
        return out["pooled"]
    return out["last_hidden_state"][0]


def apply_head(head: dict, feats: jax.Array) -> jax.Array:
    return (feats.astype(jnp.float32) @ head["kernel"] + head["bias"])


def logits(spec: ModelSpec, backbone: dict, head: dict, pixels: jax.Array, *,
           adapters: dict | None = None, lora: LoraConfig | None = None,
           key: jax.Array | None = None, dtype=jnp.float32) -> jax.Array:
    """Class logits for one image."""
    return apply_head(head, features(spec, backbone, pixels, adapters=adapters, lora=lora,
                                     key=key, dtype=dtype))


def batch_logits(spec: ModelSpec, backbone: dict, head: dict, pixels: jax.Array, *,
                 adapters: dict | None = None, lora: LoraConfig | None = None,
                 keys: jax.Array | None = None, dtype=jnp.float32) -> jax.Array:
    """(B, C) logits for a batch (B, H, W, C); keys (B,) per-example dropout keys or None."""
    def one(x, k):
        return logits(spec, backbone, head, x, adapters=adapters, lora=lora, key=k, dtype=dtype)

    if keys is None:
        return jax.vmap(lambda x: one(x, None))(pixels)
    return jax.vmap(one)(pixels, keys)
