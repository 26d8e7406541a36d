"""The map methods of the study, in one table (SPEC R2): name → which models have it, per
head or head-fused, the forward attention modes it can be computed from, and how (by
`attention_map`, the one dispatcher from a forward output to maps). Each model's default map
is decided here too. The study config, extract, compare, report, shift, the CLI and the
scripts read this table; none keeps its own list.

Which models a method applies to follows from the token layout and the pooler: a CLS map or
rollout needs a CLS token (SigLIP has none), a probe map needs a MAP head (SigLIP's
pooling); the mean map (attention received, averaged over query rows) exists for every model.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import jax
import jax.numpy as jnp

from ssl_jax.attention.maps import Method, mean_map
from ssl_jax.attention.methods import attention_map
from ssl_jax.models.collectors import attention_collectors
from ssl_jax.models.encoder import encode
from ssl_jax.models.model import EncoderOutput
from ssl_jax.models.spec import ModelSpec

ForwardMode = Literal["cls", "full", "rollout"]


@dataclass(frozen=True)
class MapMethod:
    """One map method: `kind` is the `attention_map` method it computes, head-fused by mean
    or per head (`per_head`)."""

    name: str
    kind: Method
    per_head: bool
    # forward(attentions=...) modes whose output holds what the method reads
    forward_modes: tuple[ForwardMode, ...]
    needs_cls: bool = False
    needs_map_head: bool = False

    def applies_to(self, spec: ModelSpec) -> bool:
        return ((spec.has_cls or not self.needs_cls)
                and (spec.pooler == "map" or not self.needs_map_head))

    def layers(self, spec: ModelSpec) -> tuple[int, ...]:
        """The model layers of the method's maps, in order (the layer axis of `compute`'s
        result): every layer; the probe sits after the last layer, stored as that layer."""
        if self.kind == "probe":
            return (spec.num_layers - 1,)
        return tuple(range(spec.num_layers))

    def compute(self, output, *, layer: int | None = None) -> jax.Array:
        """Maps from an `EncoderOutput`: (B, layers, [heads], grid_h, grid_w), the layers of
        the output's attentions (the probe: one); `layer` (a model layer index) drops that
        axis. Rollout from full attentions needs every layer from 0."""
        fusion = None if self.per_head else "mean"
        if self.kind == "probe":
            if layer is not None:
                raise ValueError(f"{self.name} belongs to no layer; call it with layer=None")
            return attention_map(output, "probe", fusion=fusion)[:, None]
        if self.kind == "mean" and layer is not None and layer in output.attention_layers:
            # that layer's attentions alone, as the shift always mapped them: mapping every
            # layer and picking one is the same maths in other last bits (XLA's reduction
            # order over a rank-5 array)
            att = output.attentions[:, output.attention_layers.index(layer)]
            return mean_map(att, output.layout, fusion=fusion)
        return attention_map(output, self.kind, layer=layer, fusion=fusion)


_FULL_OR_CLS: tuple[ForwardMode, ...] = ("cls", "full")

# the order is the study's: config defaults, the cache and the tables list methods in it
MAP_METHODS: dict[str, MapMethod] = {m.name: m for m in (
    MapMethod("cls", "cls", False, _FULL_OR_CLS, needs_cls=True),
    MapMethod("cls_heads", "cls", True, _FULL_OR_CLS, needs_cls=True),
    MapMethod("mean", "mean", False, ("full",)),
    MapMethod("mean_heads", "mean", True, ("full",)),
    MapMethod("rollout", "rollout", False, ("rollout", "full"), needs_cls=True),
    MapMethod("probe", "probe", False, _FULL_OR_CLS, needs_map_head=True),
    MapMethod("probe_heads", "probe", True, _FULL_OR_CLS, needs_map_head=True),
)}
METHOD_NAMES: tuple[str, ...] = tuple(MAP_METHODS)

# a model's default map (the study's): the first of these it has — CLS attention, or for
# SigLIP (no CLS token) mean attention (SPEC R2.4)
DEFAULT_ORDER: tuple[str, ...] = ("cls", "mean", "probe")


def map_method(name: str) -> MapMethod:
    try:
        return MAP_METHODS[name]
    except KeyError:
        raise ValueError(f"unknown map method {name!r}; known: {', '.join(METHOD_NAMES)}") from None


def unknown_methods(names: Iterable[str]) -> list[str]:
    return [n for n in names if n not in MAP_METHODS]


def applicable_methods(spec: ModelSpec, requested: Sequence[str]) -> tuple[str, ...]:
    """The requested methods that exist for this model, in the requested order (no CLS → no
    cls / rollout; only a MAP head has a probe)."""
    return tuple(n for n in requested if map_method(n).applies_to(spec))


def preferred_method(available: Iterable[str]) -> str:
    """The default among the methods `available` for one model: the first of DEFAULT_ORDER,
    else the first by name."""
    have = sorted(available)
    if not have:
        raise ValueError("no map method to choose from")
    return next((n for n in DEFAULT_ORDER if n in have), have[0])


def default_method(spec: ModelSpec) -> str:
    """The model's default map method: "cls" for CLS models, "mean" for SigLIP."""
    return preferred_method(applicable_methods(spec, METHOD_NAMES))


def per_head_method(name: str) -> str:
    """The per-head variant of a head-fused method ("cls" → "cls_heads")."""
    kind = map_method(name).kind
    for m in MAP_METHODS.values():
        if m.kind == kind and m.per_head:
            return m.name
    raise ValueError(f"map method {name!r} has no per-head variant")


def forward_mode(names: Iterable[str]) -> ForwardMode:
    """The one forward attention mode the methods `names` are all computed from: "full",
    which every method reads. The study computes every method of a model from one such pass,
    so a method's numbers never depend on which others are asked for."""
    for n in names:
        if "full" not in map_method(n).forward_modes:
            raise ValueError(f"map method {n!r} cannot be computed from full attentions")
    return "full"


def method_maps(spec: ModelSpec, params: dict, pixels: jax.Array, methods: Sequence[str], *,
                layer: int | None = None, dtype=jnp.float32) -> dict[str, jax.Array]:
    """{method: maps} of a batch of preprocessed images (B, H, W, C) from one forward pass in
    `forward_mode(methods)`: (B, layers, [heads], grid_h, grid_w) over every layer, or with
    `layer` (0..L-1) that layer's maps (B, [heads], grid_h, grid_w).

    Traced inline, for a caller's own jit (extract, shift): `forward`'s jit nested inside
    another one changes XLA's fusion, and mean maps in their last bits.
    """
    layers = tuple(range(spec.num_layers)) if layer is None else (layer,)
    run = functools.partial(encode, spec, collect=attention_collectors(
        spec, forward_mode(methods), layers=layers), dtype=dtype)
    out = jax.vmap(run, in_axes=(None, 0))(params, pixels)
    output = EncoderOutput(layout=spec.layout(pixels.shape[1], pixels.shape[2]),
                           attention_layers=layers, **out)
    return {m: map_method(m).compute(output, layer=layer) for m in methods}
