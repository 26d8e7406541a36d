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

from ..models.spec import TokenLayout

Fusion = Literal["mean", "max", "min"]
FUSIONS = ("mean", "max", "min")


def _check_fusion(fusion) -> None:
    if fusion is not None and fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS} or None (per head), got {fusion!r}")


def select_heads(x: jax.Array, head_indices: Sequence[int] | None, axis: int) -> jax.Array:
    """Keep the heads `head_indices` (in that order) along `axis`; None keeps all."""
    if head_indices is None:
        return x
    n = x.shape[axis]
    idx = tuple(int(h) for h in head_indices)
    if not idx:
        raise ValueError("head_indices is empty; pass None for all heads")
    bad = [h for h in idx if not -n <= h < n]
    if bad:
        raise ValueError(f"head indices {bad} out of range for {n} heads (valid 0..{n - 1})")
    return jnp.take(x, jnp.asarray([h % n for h in idx]), axis=axis)


def fuse_heads(
    x: jax.Array,
    fusion: Fusion | None = "mean",
    head_indices: Sequence[int] | None = None,
    *,
    axis: int,
) -> jax.Array:
    """Select heads, then reduce the heads `axis` by mean / max / min (None: keep per head)."""
    _check_fusion(fusion)
    x = select_heads(jnp.asarray(x, jnp.float32), head_indices, axis)
    if fusion is None:
        return x
    return {"mean": jnp.mean, "max": jnp.max, "min": jnp.min}[fusion](x, axis=axis)


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
    """CLS → patch attention from CLS rows (..., heads, T) (as `forward(attentions="cls")`).

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


def _layer_position(attention_layers: tuple[int, ...], layer: int) -> int:
    if not attention_layers:
        raise ValueError("this output carries no per-layer attentions")
    if layer in attention_layers:
        return attention_layers.index(layer)
    if -len(attention_layers) <= layer < 0:
        return layer % len(attention_layers)
    raise ValueError(f"layer {layer} is not in this output's attention layers "
                     f"{list(attention_layers)} (negative indices count from the end)")


def attention_map(
    output,
    method: Method,
    *,
    layer: int | None = None,
    fusion: Fusion | None = "mean",
    head_indices: Sequence[int] | None = None,
    rollout_options=None,
) -> jax.Array:
    """Maps from an `EncoderOutput`: (B, [layers], [heads], grid_h, grid_w).

    The output's own attention mode decides the source ("full" (B, L', H, T, T), "cls" rows
    (B, L', H, T), "rollout" rows (B, L', T)); `layer` is a model layer index from
    `output.attention_layers` (negative: from the end of that list) and drops the layer
    axis; None keeps it. "rollout" from full attentions needs all layers from 0 and takes
    `rollout_options`; rollout has no heads (fusion/head_indices go in the options).
    """
    layout = output.layout
    att = output.attentions
    if method == "probe":
        return probe_map(output.probe_attention, layout, fusion=fusion, head_indices=head_indices)
    if att is None:
        raise ValueError(f"method {method!r} needs attentions: run forward(..., attentions=...)")
    if method not in ("cls", "mean", "rollout"):
        raise ValueError(f"method must be 'cls', 'mean', 'probe' or 'rollout', got {method!r}")
    layers = output.attention_layers
    if method == "rollout":
        from .rollout import rollout_map

        if att.ndim == 3:  # fused forward: CLS rows already rolled out
            rows = att
            if rollout_options is not None:
                raise ValueError("rollout_options belong in forward(..., rollout=...) for a "
                                 "fused-rollout output")
            maps = tokens_to_grid(rows, layout)
        elif att.ndim == 5:
            if layers != tuple(range(len(layers))):
                raise ValueError(f"rollout from full attentions needs layers 0..L-1, this "
                                 f"output has {list(layers)}")
            opts = rollout_options
            start = 0 if opts is None else opts.start_layer
            maps = rollout_map(att, layout, options=opts, all_layers=True)
            layers = layers[start:start + maps.shape[1]]
        else:
            raise ValueError("rollout needs forward(..., attentions='full' or 'rollout')")
    elif method == "cls":
        if att.ndim == 5:
            maps = cls_map(att, layout, fusion=fusion, head_indices=head_indices)
        elif att.ndim == 4:
            maps = cls_row_map(att, layout, fusion=fusion, head_indices=head_indices)
        else:
            raise ValueError("cls maps need forward(..., attentions='full' or 'cls')")
    else:
        if att.ndim != 5:
            raise ValueError("mean maps need forward(..., attentions='full')")
        maps = mean_map(att, layout, fusion=fusion, head_indices=head_indices)
    if layer is None:
        return maps
    return maps[:, _layer_position(tuple(layers), layer)]
