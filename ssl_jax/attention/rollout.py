"""Attention rollout (Abnar & Zuidema 2020) as the original study computes it (SPEC R2.5).

Per layer l in [start_layer, end_layer):
    F  = fuse_heads(A_l)                       (mean over the chosen heads by default)
    F  = discard(F)                            (only when discard_ratio > 0)
    F  = F / (rowsum(F) + 1e-8)
    F' = F + residual_weight · I;  F' = F' / (rowsum(F') + 1e-8)
    R  = F' @ R                                (R starts as I: R = F'_end ⋯ F'_start)
The defaults (mean, residual_weight 1, no discard, all layers) are exactly the study's.

`rollout_step` (ssl_jax.models.fusion) is the single definition of one layer's update; both
the from-attentions functions here and the fused forward mode (`forward(...,
attentions="rollout")`, which carries one T×T matrix per image through the layer loop) use it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ssl_jax.attention.maps import tokens_to_grid
from ssl_jax.models.fusion import RolloutOptions, rollout_step


def _check_attentions(attentions: jax.Array) -> None:
    if attentions.ndim != 5 or attentions.shape[-1] != attentions.shape[-2]:
        raise ValueError("rollout expects full attentions (batch, layers, heads, T, T), got "
                         f"shape {tuple(attentions.shape)}")


def _options(options: RolloutOptions | None, overrides: dict) -> RolloutOptions:
    if options is not None and overrides:
        raise ValueError("pass either options= or individual rollout knobs, not both")
    return options if options is not None else RolloutOptions(**overrides)


def _scan_rollout(attentions: jax.Array, opts: RolloutOptions, keep_rows: bool):
    start, end = opts.layer_range(attentions.shape[1])
    layers_first = jnp.moveaxis(jnp.asarray(attentions, jnp.float32)[:, start:end], 1, 0)
    b, t = attentions.shape[0], attentions.shape[-1]
    init = jnp.broadcast_to(jnp.eye(t, dtype=jnp.float32), (b, t, t))

    def body(joint, attention):
        joint = rollout_step(joint, attention, opts)
        return joint, (joint[:, 0] if keep_rows else None)

    return jax.lax.scan(body, init, layers_first)


def rollout(
    attentions: jax.Array, *, options: RolloutOptions | None = None, **knobs
) -> jax.Array:
    """Rollout matrix R (B, T, T) from full attentions (B, L, heads, T, T).

    Knobs are `RolloutOptions` fields (fusion, head_indices, residual_weight, discard_ratio,
    discard, start_layer, end_layer), given one by one or as `options`. Layer indices refer
    to the L axis of `attentions` (the model's layers when it came from
    `forward(..., attentions="full")` with default `layers`).
    """
    _check_attentions(attentions)
    joint, _ = _scan_rollout(attentions, _options(options, knobs), keep_rows=False)
    return joint


def rollout_cls_rows(
    attentions: jax.Array, *, options: RolloutOptions | None = None, **knobs
) -> jax.Array:
    """CLS row of R after every layer in [start_layer, end_layer): (B, end - start, T).

    Row i is the rollout through layers start..start+i inclusive (the study's cache key
    "layer{l}" is row l for start 0).
    """
    _check_attentions(attentions)
    _, rows = _scan_rollout(attentions, _options(options, knobs), keep_rows=True)
    return jnp.moveaxis(rows, 0, 1)


def rollout_map(
    attentions: jax.Array,
    layout,
    *,
    options: RolloutOptions | None = None,
    all_layers: bool = False,
    **knobs,
) -> jax.Array:
    """CLS → patch rollout on the grid: (B, grid_h, grid_w) after end_layer, or with
    `all_layers` (B, end - start, grid_h, grid_w) after each layer. Needs a CLS token."""
    if not layout.has_cls:
        raise ValueError(f"rollout_map needs a CLS token, but this layout has none ({layout}); "
                         "SigLIP has no rollout in the study (use mean_map or probe_map)")
    if attentions.shape[-1] != layout.num_tokens:
        raise ValueError(f"attentions have {attentions.shape[-1]} tokens, layout {layout} has "
                         f"{layout.num_tokens}")
    rows = rollout_cls_rows(attentions, options=options, **knobs)
    return tokens_to_grid(rows if all_layers else rows[:, -1], layout)
