"""Shared pieces of the ViT embeddings: patches, learned position tables, the token sequence.

The families (`ssl_jax.models.families`) compose these; what differs between them (which
tokens exist, how a position table is interpolated, RoPE instead of a table) is the family's
choice, passed in here explicitly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ssl_jax.core.resample import resize_axes
from ssl_jax.models.spec import ModelSpec, TokenLayout


def interpolate_positions(spec: ModelSpec, table: jax.Array, grid_h: int, grid_w: int, *,
                          antialias: bool) -> jax.Array:
    """Patch position table (grid_h*grid_w, D) for the given grid, as transformers does it:
    bicubic in float32, with antialias (PIL-style a=-0.5; DINOv2-reg, always applied) or
    plain torch bicubic (a=-0.75, clamped taps; `interpolate_pos_encoding=True`). At the
    checkpoint's own grid the table is used as stored."""
    g = spec.pos_grid
    patch = table[int(spec.has_cls):]
    if (grid_h, grid_w) == (g, g):
        return patch
    grid = patch.reshape(g, g, -1).astype(jnp.float32)
    out = resize_axes(grid, (grid_h, grid_w), axes=(0, 1), method="bicubic", antialias=antialias)
    return out.reshape(grid_h * grid_w, -1).astype(table.dtype)


def patchify(pixels: jax.Array, patch: int) -> jax.Array:
    """(H, W, C) → (num_patches, patch*patch*C), row-major patches, (ph, pw, C) inside."""
    h, w, c = pixels.shape
    x = pixels.reshape(h // patch, patch, w // patch, patch, c).transpose(0, 2, 1, 3, 4)
    return x.reshape((h // patch) * (w // patch), patch * patch * c)


def vit_embed(spec: ModelSpec, p: dict, pixels: jax.Array, dtype, *,
              antialias: bool = False) -> tuple[jax.Array, TokenLayout]:
    """Token sequence [CLS?, registers, patches] of one image (H, W, C): the patch Conv2d as
    a matmul, the CLS token, registers, and the learned position table (interpolated with
    `antialias` or not) unless the spec uses RoPE."""
    layout = spec.layout(pixels.shape[0], pixels.shape[1])
    kernel = p["patch"]["kernel"]
    x = patchify(pixels.astype(dtype), spec.patch_size) @ kernel.reshape(-1, kernel.shape[-1]).astype(dtype)
    if "bias" in p["patch"]:
        x = x + p["patch"]["bias"].astype(dtype)
    d = x.shape[-1]
    cls = p["cls"].astype(dtype)[None] if spec.has_cls else jnp.zeros((0, d), dtype)
    if spec.rope_theta is None:
        pos = p["pos"]
        x = x + interpolate_positions(spec, pos, layout.grid_h, layout.grid_w,
                                      antialias=antialias).astype(dtype)
        if spec.has_cls:
            cls = cls + pos[:1].astype(dtype)
    regs = p["registers"].astype(dtype) if spec.num_registers else jnp.zeros((0, d), dtype)
    # DINOv2 registers are inserted after the position embedding: they get none.
    return jnp.concatenate([cls, regs, x], axis=0), layout


def vit_embed_shapes(spec: ModelSpec, *, mask_token: bool = False) -> dict:
    """Shapes of the `vit_embed` parameters (plus an unused mask token, kept so the
    checkpoint round-trips)."""
    d, p, c = spec.hidden_size, spec.patch_size, spec.num_channels
    embed: dict = {"patch": {"kernel": (p, p, c, d)}}
    if spec.patch_bias:
        embed["patch"]["bias"] = (d,)
    if spec.has_cls:
        embed["cls"] = (d,)
    if spec.num_registers:
        embed["registers"] = (spec.num_registers, d)
    if spec.rope_theta is None:
        embed["pos"] = (int(spec.has_cls) + spec.pos_grid**2, d)
    if mask_token:
        embed["mask_token"] = (d,)
    return embed
