"""Attention rollout (Abnar & Zuidema 2020) as the original study computes it (SPEC R2.5).

Per layer l in [start_layer, end_layer):
    F  = fuse_heads(A_l)                       (mean over the chosen heads by default)
    F  = discard(F)                            (only when discard_ratio > 0)
    F  = F / (rowsum(F) + 1e-8)
    F' = F + residual_weight · I;  F' = F' / (rowsum(F') + 1e-8)
    R  = F' @ R                                (R starts as I: R = F'_end ⋯ F'_start)
The defaults (mean, residual_weight 1, no discard, all layers) are exactly the study's.

`rollout_step` is the single definition of one layer's update; both the from-attentions
functions here and the fused forward mode (`forward(..., attentions="rollout")`, which
carries one T×T matrix per image through the layer loop) use it. This module imports
nothing from `ssl_jax.models` at import time so the encoder can use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import jax
import jax.numpy as jnp

from .maps import FUSIONS, Fusion, fuse_heads, tokens_to_grid

ROLLOUT_EPS = 1e-8
Discard = Literal["matrix", "row"]


@dataclass(frozen=True)
class RolloutOptions:
    """Static rollout knobs (hashable: a jit static argument).

    fusion / head_indices: head fusion per layer (SPEC R2.1).
    residual_weight: w in F + w·I before the row renormalisation; 1 is the study's
        (= 0.5·F + 0.5·I for stochastic rows), 0 rolls out attention alone.
    discard_ratio: fraction of the smallest fused entries zeroed before renormalising.
    discard: "matrix" (the study's rule, R9.14: threshold = k-th smallest of the whole T×T
        matrix, k = int(T²·ratio)) or "row" (k = int(T·ratio) per query row). Entries equal
        to the threshold survive.
    start_layer / end_layer: layers [start_layer, end_layer) are multiplied in; end None
        = all layers.
    """

    fusion: Fusion = "mean"
    head_indices: tuple[int, ...] | None = None
    residual_weight: float = 1.0
    discard_ratio: float = 0.0
    discard: Discard = "matrix"
    start_layer: int = 0
    end_layer: int | None = None

    def __post_init__(self):
        if self.fusion not in FUSIONS:
            raise ValueError(f"rollout fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.head_indices is not None:
            object.__setattr__(self, "head_indices", tuple(int(h) for h in self.head_indices))
        if not 0.0 <= self.discard_ratio < 1.0:
            raise ValueError(f"discard_ratio must be in [0, 1), got {self.discard_ratio}")
        if self.discard not in ("matrix", "row"):
            raise ValueError(f"discard must be 'matrix' or 'row', got {self.discard!r}")
        if self.residual_weight < 0:
            raise ValueError(f"residual_weight must be >= 0, got {self.residual_weight}")

    def layer_range(self, num_layers: int) -> tuple[int, int]:
        """Resolved [start, end) for a stack of `num_layers`, with a clear error."""
        end = num_layers if self.end_layer is None else self.end_layer
        if not 0 <= self.start_layer < end <= num_layers:
            raise ValueError(
                f"rollout layers [start_layer={self.start_layer}, end_layer={self.end_layer}) "
                f"invalid for {num_layers} layers: need 0 <= start < end <= {num_layers}")
        return self.start_layer, end


def _discard_low(fused: jax.Array, ratio: float, mode: Discard) -> jax.Array:
    t = fused.shape[-1]
    if mode == "matrix":
        flat = fused.reshape(*fused.shape[:-2], t * t)
        k = int(t * t * ratio)
        if k == 0:
            return fused
        threshold = jnp.sort(flat, axis=-1)[..., k - 1][..., None, None]
    else:
        k = int(t * ratio)
        if k == 0:
            return fused
        threshold = jnp.sort(fused, axis=-1)[..., k - 1][..., None]
    return jnp.where(fused < threshold, 0.0, fused)


def layer_transition(attention: jax.Array, options: RolloutOptions) -> jax.Array:
    """One layer's row-stochastic transition F' from its probabilities (..., heads, T, T)."""
    fused = fuse_heads(attention, options.fusion, options.head_indices, axis=-3)
    if options.discard_ratio > 0:
        fused = _discard_low(fused, options.discard_ratio, options.discard)
    fused = fused / (jnp.sum(fused, axis=-1, keepdims=True) + ROLLOUT_EPS)
    eye = jnp.eye(fused.shape[-1], dtype=fused.dtype)
    with_residual = fused + jnp.float32(options.residual_weight) * eye
    return with_residual / (jnp.sum(with_residual, axis=-1, keepdims=True) + ROLLOUT_EPS)


def rollout_step(joint: jax.Array, attention: jax.Array, options: RolloutOptions) -> jax.Array:
    """R ← F'_l @ R for one layer: joint (..., T, T), attention (..., heads, T, T)."""
    return jnp.matmul(layer_transition(attention, options), joint,
                      precision=jax.lax.Precision.HIGHEST)


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
