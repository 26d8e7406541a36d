"""Head fusion and the per-layer rollout update: the pieces of attention maths the encoder
loop itself applies (the fused "cls"/"rollout" modes), so they sit with the models and the
attention package re-exports them (SPEC R2.1, R2.5)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import jax
import jax.numpy as jnp

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
