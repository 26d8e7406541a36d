"""What the encoder loop keeps from each layer, or adds to it: collectors.

`encode(spec, params, pixels, collect=(...))` runs the layer stack once under `lax.scan` and
asks each collector, per layer, for what it keeps. Every output field has one rank,
whatever else is collected (per image; `forward` adds the batch axis):

    FullAttention(layers)   "attentions"       (L', heads, T, T)  post-softmax probabilities
    ClsAttention(layers)    "cls_attentions"   (L', heads, T)     their CLS rows (CLS models)
    Rollout(options, layers) "rollout"         (L', T)            rollout CLS row after each
                                                                  layer, one T×T carry
    HiddenStates()          "hidden_states"    (L+1, T, D)        embeddings, then each layer
    ProbeAttention()        "probe_attention"  (heads, T)         the MAP head's probe (SigLIP)

`layers` are model layer indices in [0, L) (None: all; Rollout: its options' range), kept in
increasing order. Gradient taps change the forward instead (zeros leave it unchanged; used
by `ssl_jax.attention.gradients`): ProbabilityTap(delta (L, heads, T, T)) adds delta to
every layer's attention probabilities, StateTap(s, delta (T, D)) adds delta to hidden state
s (0 = embeddings, l + 1 = output of layer l). Taps run before the keepers, so a kept hidden
state includes its tap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import jax
import jax.numpy as jnp

from ssl_jax.models.fusion import RolloutOptions, rollout_step
from ssl_jax.models.layers import Attention
from ssl_jax.models.spec import ModelSpec, TokenLayout

AttentionMode = Literal["none", "cls", "full", "rollout"]


class Collector:
    """One thing the layer loop keeps (or, for a tap, changes). The loop calls, per image:
    `start` → the collector's carry through the layers (arrays or None); per layer `step` →
    (hidden state, carry, kept value); at the end `finish` → output fields. The defaults
    keep nothing."""

    needs_probs: ClassVar[bool] = False  # the layers must return their probabilities
    is_tap: ClassVar[bool] = False  # changes the forward: runs before the keepers

    def start(self, spec: ModelSpec, layout: TokenLayout) -> Any:
        return None

    def scanned(self) -> Any:
        """Per-layer inputs (leading axis num_layers), sliced by the scan for `step`."""
        return None

    def on_embeddings(self, x: jax.Array) -> jax.Array:
        return x

    def interceptor(self, per_layer: Any):
        """A flax method interceptor for this layer's block, or None."""
        return None

    def step(self, spec: ModelSpec, carry, per_layer, i: jax.Array, x: jax.Array, probs):
        return x, carry, None

    def finish(self, spec: ModelSpec, carry, kept, embedded: jax.Array, pooled: dict) -> dict:
        return {}


def _check_layers(layers: tuple[int, ...] | None, n: int, what: str) -> tuple[int, ...]:
    """`layers` (None: all of the n) after checking they are model layer indices."""
    if layers is None:
        return tuple(range(n))
    bad = [i for i in layers if not 0 <= i < n]
    if bad:
        raise ValueError(f"{what}: layers {bad} out of range for a {n}-layer model "
                         f"(model indices 0..{n - 1})")
    return layers


def _pick(kept: jax.Array, layers: tuple[int, ...]) -> jax.Array:
    """Rows `layers` of the per-layer axis: a contiguous range is a slice, else a gather."""
    lo = layers[0] if layers else 0
    if layers == tuple(range(lo, lo + len(layers))):
        return kept[lo:lo + len(layers)]
    return kept[jnp.asarray(layers, dtype=jnp.int32)]


def _sorted_layers(self) -> None:
    if self.layers is not None:
        object.__setattr__(self, "layers", tuple(sorted({int(i) for i in self.layers})))


@dataclass(frozen=True)
class FullAttention(Collector):
    """Every head's attention probabilities (L', heads, T, T), as "attentions"."""

    layers: tuple[int, ...] | None = None
    needs_probs: ClassVar[bool] = True
    __post_init__ = _sorted_layers

    def start(self, spec, layout):
        _check_layers(self.layers, spec.num_layers, "FullAttention")

    def step(self, spec, carry, per_layer, i, x, probs):
        return x, carry, probs

    def finish(self, spec, carry, kept, embedded, pooled):
        return {"attentions": _pick(kept, _check_layers(self.layers, spec.num_layers, ""))}


@dataclass(frozen=True)
class ClsAttention(Collector):
    """The CLS query's row of every head's attention (L', heads, T), as "cls_attentions"."""

    layers: tuple[int, ...] | None = None
    needs_probs: ClassVar[bool] = True
    __post_init__ = _sorted_layers

    def start(self, spec, layout):
        if not layout.has_cls:
            raise ValueError(f"ClsAttention needs a CLS token; {spec.family} has none "
                             "(SigLIP: ProbeAttention, or FullAttention for mean maps)")
        _check_layers(self.layers, spec.num_layers, "ClsAttention")

    def step(self, spec, carry, per_layer, i, x, probs):
        return x, carry, probs[:, 0]

    def finish(self, spec, carry, kept, embedded, pooled):
        return {"cls_attentions": _pick(kept, _check_layers(self.layers, spec.num_layers, ""))}


@dataclass(frozen=True)
class Rollout(Collector):
    """Attention rollout (`ssl_jax.models.fusion.rollout_step`) folded into the layer loop:
    one T×T matrix carried, its CLS row kept after each layer in `layers` (default: the
    options' [start_layer, end_layer)), as "rollout" (L', T)."""

    options: RolloutOptions = field(default_factory=RolloutOptions)
    layers: tuple[int, ...] | None = None
    needs_probs: ClassVar[bool] = True
    __post_init__ = _sorted_layers

    def _layers(self, spec: ModelSpec) -> tuple[int, ...]:
        start, end = self.options.layer_range(spec.num_layers)
        if self.layers is None:
            return tuple(range(start, end))
        outside = [i for i in self.layers if not start <= i < end]
        if outside:
            raise ValueError(f"layers {outside} lie outside the rollout range "
                             f"[start_layer={start}, end_layer={end})")
        return self.layers

    def start(self, spec, layout):
        if not layout.has_cls:
            raise ValueError(f"Rollout needs a CLS token; {spec.family} has none")
        self._layers(spec)
        return jnp.eye(layout.num_tokens, dtype=jnp.float32)

    def step(self, spec, joint, per_layer, i, x, probs):
        start, end = self.options.layer_range(spec.num_layers)
        stepped = rollout_step(joint, probs, self.options)
        joint = jnp.where((i >= start) & (i < end), stepped, joint)
        return x, joint, joint[0]

    def finish(self, spec, carry, kept, embedded, pooled):
        return {"rollout": _pick(kept, self._layers(spec))}


@dataclass(frozen=True)
class HiddenStates(Collector):
    """The residual stream: embeddings, then each layer's output (L+1, T, D)."""

    def step(self, spec, carry, per_layer, i, x, probs):
        return x, carry, x

    def finish(self, spec, carry, kept, embedded, pooled):
        return {"hidden_states": jnp.concatenate([embedded[None], kept])}


@dataclass(frozen=True)
class ProbeAttention(Collector):
    """The MAP head's probe attention over all tokens (heads, T), as "probe_attention";
    it belongs to no layer (the head reads the final tokens)."""

    def finish(self, spec, carry, kept, embedded, pooled):
        if "probe_attention" not in pooled:
            raise ValueError(f"ProbeAttention needs a MAP-head pooler; {spec.family} has "
                             f"pooler {spec.pooler!r}")
        return {"probe_attention": pooled["probe_attention"]}


# ---- gradient taps -----------------------------------------------------------------------------

def _probability_tap(delta: jax.Array):
    """A flax interceptor adding `delta` (heads, T, T) to one layer's attention probabilities.

    The attention output is linear in the probabilities (o = P·v per head), so instead of
    re-implementing attention it adds delta·v to the input of the output projection, with v
    captured from the qkv projection. With delta = 0 the forward is unchanged and
    d(output)/d(delta) is exactly d(output)/d(probabilities): a gradient tap.
    """
    captured = {}

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name == "__call__" and isinstance(module.parent, Attention):
            if module.name == "qkv":
                out = next_fun(*args, **kwargs)
                captured["v"] = out[:, 2]  # (T, heads, head_dim)
                return out
            if module.name == "out":
                heads_out = args[0]  # (T, heads, head_dim) = P·v
                extra = jnp.einsum("hqk,khd->qhd", delta.astype(heads_out.dtype), captured["v"])
                return next_fun(heads_out + extra, *args[1:], **kwargs)
        return next_fun(*args, **kwargs)

    return interceptor


@dataclass(frozen=True, eq=False)
class ProbabilityTap(Collector):
    """Adds delta (L, heads, T, T) to every layer's attention probabilities."""

    delta: jax.Array
    needs_probs: ClassVar[bool] = True
    is_tap: ClassVar[bool] = True

    def scanned(self):
        return self.delta

    def interceptor(self, per_layer):
        return _probability_tap(per_layer)


@dataclass(frozen=True, eq=False)
class StateTap(Collector):
    """Adds delta (T, D) to hidden state `index` (0 = embeddings, l + 1 = output of layer l)."""

    index: int
    delta: jax.Array
    is_tap: ClassVar[bool] = True

    def start(self, spec, layout):
        if not 0 <= self.index <= spec.num_layers:
            raise ValueError(f"state_tap index {self.index} outside 0..{spec.num_layers}")

    def on_embeddings(self, x):
        return x + self.delta.astype(x.dtype) if self.index == 0 else x

    def step(self, spec, carry, per_layer, i, x, probs):
        return jnp.where(i + 1 == self.index, x + self.delta.astype(x.dtype), x), carry, None


# ---- the public sugar ------------------------------------------------------------------------------

def attention_collectors(spec: ModelSpec, mode: AttentionMode,
                         layers: Sequence[int] | None = None,
                         rollout: RolloutOptions | None = None) -> tuple[Collector, ...]:
    """The collectors of `forward(attentions=mode)`: "full" → FullAttention, "cls" →
    ClsAttention (none for a model without CLS), "rollout" → Rollout (default options: the
    study's), "none" → nothing; a MAP-head model adds its ProbeAttention to every mode but
    "none"."""
    layers = None if layers is None else tuple(layers)
    if mode == "none":
        return ()
    if mode == "full":
        out: tuple[Collector, ...] = (FullAttention(layers),)
    elif mode == "cls":
        out = (ClsAttention(layers),) if spec.has_cls else ()
    elif mode == "rollout":
        out = (Rollout(rollout if rollout is not None else RolloutOptions(), layers),)
    else:
        raise ValueError(f"attentions must be 'none', 'cls', 'full' or 'rollout', got {mode!r}")
    return out + ((ProbeAttention(),) if spec.pooler == "map" else ())
