"""From a forward output to maps: which map method reads which attention field (SPEC R2).

`attention_map` is the one dispatcher from an `EncoderOutput` to CLS / mean / probe /
rollout maps; maps.py and rollout.py hold the maths it calls."""

from __future__ import annotations

from collections.abc import Sequence

import jax

from ssl_jax.attention.maps import Method, cls_map, cls_row_map, mean_map, probe_map, tokens_to_grid
from ssl_jax.attention.rollout import rollout_map
from ssl_jax.models.fusion import Fusion


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

    Each method reads the fields that hold its source: "cls" the CLS rows (`cls_attentions`
    (B, L', H, T), from forward(attentions="cls")) or the full `attentions` (B, L', H, T, T);
    "mean" the full attentions; "rollout" the fused `rollout` rows (B, L', T), or the full
    attentions of all layers from 0 (with `rollout_options`); "probe" `probe_attention`.
    `layer` is a model layer index from `output.attention_layers` (negative: from the end of
    that list) and drops the layer axis; None keeps it. Rollout has no heads
    (fusion/head_indices go in the options).
    """
    layout = output.layout
    full, rows, rolled = output.attentions, output.cls_attentions, output.rollout
    if method == "probe":
        return probe_map(output.probe_attention, layout, fusion=fusion, head_indices=head_indices)
    if method not in ("cls", "mean", "rollout"):
        raise ValueError(f"method must be 'cls', 'mean', 'probe' or 'rollout', got {method!r}")
    if full is None and rows is None and rolled is None:
        raise ValueError(f"method {method!r} needs attentions: run forward(..., attentions=...)")
    layers = output.attention_layers
    if method == "rollout":
        if rolled is not None:  # fused forward: CLS rows already rolled out
            if rollout_options is not None:
                raise ValueError("rollout_options belong in forward(..., rollout=...) for a "
                                 "fused-rollout output")
            maps = tokens_to_grid(rolled, layout)
        elif full is not None:
            if layers != tuple(range(len(layers))):
                raise ValueError(f"rollout from full attentions needs layers 0..L-1, this "
                                 f"output has {list(layers)}")
            opts = rollout_options
            start = 0 if opts is None else opts.start_layer
            maps = rollout_map(full, layout, options=opts, all_layers=True)
            layers = layers[start:start + maps.shape[1]]
        else:
            raise ValueError("rollout needs forward(..., attentions='full' or 'rollout')")
    elif method == "cls":
        if full is not None:
            maps = cls_map(full, layout, fusion=fusion, head_indices=head_indices)
        elif rows is not None:
            maps = cls_row_map(rows, layout, fusion=fusion, head_indices=head_indices)
        else:
            raise ValueError("cls maps need forward(..., attentions='full' or 'cls')")
    else:
        if full is None:
            raise ValueError("mean maps need forward(..., attentions='full')")
        maps = mean_map(full, layout, fusion=fusion, head_indices=head_indices)
    if layer is None:
        return maps
    return maps[:, _layer_position(tuple(layers), layer)]
