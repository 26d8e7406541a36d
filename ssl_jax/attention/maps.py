"""Attention maps on the patch grid: CLS → patch, mean attention received, MAP-head probe.

Every function takes attention probabilities with the heads axis explicit and the token
layout passed in (never inferred from a sequence length), strips the prefix tokens (CLS,
registers) and returns maps shaped (..., [heads], grid_h, grid_w): the leading axes of the
input (batch, layers) are kept; the heads axis is kept when `fusion=None` (per-head maps)
and reduced otherwise. All functions are pure and jit-able (layout and options static).

Definitions: SPEC R2.1-R2.4. Raw softmax values, not renormalised after dropping prefix
tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp

from ssl_jax.models.fusion import Fusion, fuse_heads
from ssl_jax.models.spec import TokenLayout


def tokens_to_grid(values: jax.Array, layout: TokenLayout) -> jax.Array:
    """(..., num_tokens) per-token values → (..., grid_h, grid_w): prefix dropped, row-major."""
    if values.shape[-1] != layout.num_tokens:
        raise ValueError(f"expected {layout.num_tokens} tokens on the last axis for {layout}, "
                         f"got shape {tuple(values.shape)}")
    patches = values[..., layout.num_prefix:]
    return patches.reshape(*values.shape[:-1], layout.grid_h, layout.grid_w)


def _check_full(attentions: jax.Array, layout: TokenLayout, what: str) -> None:
    t = layout.num_tokens
    if attentions.ndim < 3 or attentions.shape[-2:] != (t, t):
        raise ValueError(f"{what} expects full attentions (..., heads, {t}, {t}) for {layout}, "
                         f"got shape {tuple(attentions.shape)}")


def _require_cls(layout: TokenLayout, what: str) -> None:
    if not layout.has_cls:
        raise ValueError(f"{what} needs a CLS token, but this layout has none ({layout}); "
                         "for SigLIP use mean_map or probe_map")


def cls_row_map(
    cls_rows: jax.Array,
    layout: TokenLayout,
    *,
    fusion: Fusion | None = "mean",
    head_indices: Sequence[int] | None = None,
) -> jax.Array:
    """CLS → patch attention from CLS rows (..., heads, T) (`cls_attentions` of
    `forward(attentions="cls")`).

    Returns (..., grid_h, grid_w), or (..., heads', grid_h, grid_w) with `fusion=None`.
    """
    _require_cls(layout, "cls_row_map")
    if cls_rows.ndim < 2 or cls_rows.shape[-1] != layout.num_tokens:
        raise ValueError(f"cls_row_map expects CLS rows (..., heads, {layout.num_tokens}), got "
                         f"shape {tuple(cls_rows.shape)}")
    return tokens_to_grid(fuse_heads(cls_rows, fusion, head_indices, axis=-2), layout)


def cls_map(
    attentions: jax.Array,
    layout: TokenLayout,
    *,
    fusion: Fusion | None = "mean",
    head_indices: Sequence[int] | None = None,
) -> jax.Array:
    """CLS → patch attention from full attentions (..., heads, T, T) (SPEC R2.2 / R2.3).

    Taking row 0 commutes with any per-entry head reduction, so this equals the study's
    "fuse heads, then take the CLS row" for mean, max and min.
    """
    _check_full(attentions, layout, "cls_map")
    return cls_row_map(attentions[..., 0, :], layout, fusion=fusion, head_indices=head_indices)


def mean_map(
    attentions: jax.Array,
    layout: TokenLayout,
    *,
    fusion: Fusion | None = "mean",
    head_indices: Sequence[int] | None = None,
) -> jax.Array:
    """Attention received by each patch, averaged over all query rows (SPEC R2.4).

    Heads are fused first (order matters for max/min), then the column mean over all T
    query rows; prefix columns are then dropped (for SigLIP there are none and the map sums
    to 1).
    """
    _check_full(attentions, layout, "mean_map")
    fused = fuse_heads(attentions, fusion, head_indices, axis=-3)
    return tokens_to_grid(jnp.mean(fused, axis=-2), layout)


def probe_map(
    probe_attention: jax.Array,
    layout: TokenLayout,
    *,
    fusion: Fusion | None = "mean",
    head_indices: Sequence[int] | None = None,
) -> jax.Array:
    """SigLIP's MAP-head probe attention (B, heads, T) → (B, [heads], grid_h, grid_w)."""
    if probe_attention is None:
        raise ValueError("probe_map needs probe attention: only SigLIP (MAP-head pooling) has "
                         "it, from forward(..., attentions='cls' or 'full')")
    if probe_attention.ndim < 2 or probe_attention.shape[-1] != layout.num_tokens:
        raise ValueError(f"probe_map expects (..., heads, {layout.num_tokens}), got shape "
                         f"{tuple(probe_attention.shape)}")
    return tokens_to_grid(fuse_heads(probe_attention, fusion, head_indices, axis=-2), layout)


Method = Literal["cls", "mean", "probe", "rollout"]
