"""Shared helpers for the attention tests (no tests here): small real-architecture models.

Parameters are drawn with numpy (the jax.random initialiser compiles one kernel per shape,
which costs seconds per model on a busy CPU) with the same rules as `init_params`.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

import ssl_jax
from ssl_jax.models.config import bundled_checkpoint_files, spec_from_config
from ssl_jax.models.convert import param_shapes
from ssl_jax.models.spec import ModelSpec

ALIASES = ("dinov2", "dinov3", "mae", "clip", "siglip2")
CLS_ALIASES = ("dinov2", "dinov3", "mae", "clip")


def study_spec(alias: str) -> ModelSpec:
    files = bundled_checkpoint_files(alias)
    return spec_from_config(files["config"], files.get("preprocessor_config"))


def tiny(alias: str, seed: int = 3, num_layers: int = 3) -> ssl_jax.Model:
    """The real architecture of `alias` shrunk to width 64, 4 heads (same code paths)."""
    spec = study_spec(alias).replace(hidden_size=64, num_heads=4, mlp_dim=128,
                                     num_layers=num_layers)
    rng = np.random.default_rng(seed)

    def draw(path: str, shape: tuple[int, ...]) -> np.ndarray:
        if "norm" in path and path.endswith("scale"):
            return 1.0 + 0.1 * rng.normal(size=shape)
        if path.endswith(("ls1", "ls2")):
            return 0.1 + 0.05 * rng.normal(size=shape)
        if path.endswith("kernel"):
            inner = shape[1:] if path.startswith("blocks/") else shape
            by_input = any(k in path for k in ("qkv", "query", "key", "value"))
            fan_in = inner[0] if by_input else int(np.prod(inner[:-1]))
            return 1.5 * rng.normal(size=shape) / np.sqrt(fan_in)  # 1.5: peaked attention
        if path.endswith("bias"):
            return 0.02 * rng.normal(size=shape)
        return 0.5 * rng.normal(size=shape)

    def build(tree, prefix=""):
        if isinstance(tree, tuple):
            return jnp.asarray(draw(prefix, tree), jnp.float32)
        return {k: build(v, f"{prefix}/{k}" if prefix else k) for k, v in tree.items()}

    return ssl_jax.Model(params=build(param_shapes(spec)), spec=spec, source=f"tiny:{alias}")


def images(batch: int, spec: ModelSpec, cells: int = 6, seed: int = 0) -> np.ndarray:
    """Random normalised pixels for a cells×(cells+1) patch grid (non-square on purpose)."""
    p = spec.patch_size
    return np.random.default_rng(seed).normal(
        size=(batch, cells * p, (cells + 1) * p, 3)).astype(np.float32)


def random_attention(rng, shape) -> np.ndarray:
    """Row-stochastic, peaked random probabilities."""
    logits = 3.0 * rng.normal(size=shape)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)
