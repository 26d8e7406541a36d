"""Hugging Face state dict → ssl_jax params, through the family's key map.

Each family (`ssl_jax.models.families`) lists every tensor it needs with the checkpoint names
it may carry (`ssl_jax.models.keymap.Entry`); this module applies that map. All problems —
missing, unexpected and mis-shaped keys — are collected and reported together.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from ssl_jax.core.errors import UserError
from ssl_jax.models.families import family
from ssl_jax.models.keymap import Entry
from ssl_jax.models.layers import block_shapes
from ssl_jax.models.spec import ModelSpec


class CheckpointError(UserError):
    """A checkpoint that cannot be loaded; the message names the file, key and shapes."""


def param_shapes(spec: ModelSpec) -> dict:
    """Nested dict of shapes of the params tree for `spec` (the converter's target): the
    family's embeddings, the stacked layers (leading axis num_layers), the family's norms
    and heads."""
    outside = dict(family(spec).param_shapes(spec))
    stacked = _map_shapes(block_shapes(spec), lambda s: (spec.num_layers, *s))
    return {"embed": outside.pop("embed"), "blocks": stacked, **outside}


def _map_shapes(tree, fn):
    if isinstance(tree, dict):
        return {k: _map_shapes(v, fn) for k, v in tree.items()}
    return fn(tree)


def key_map(spec: ModelSpec) -> list[Entry]:
    """Every tensor the encoder needs, with the checkpoint names it may carry (the family's
    map; `ssl_jax.io.runs.params_to_state_dict` inverts it for export)."""
    return family(spec).key_map(spec)


# ---- conversion --------------------------------------------------------------------------------

def strip_wrapper_prefix(spec: ModelSpec, keys: list[str]) -> dict[str, str]:
    """Map each checkpoint key to its name without the wrapper prefix (vision_model., vit.)."""
    out = {}
    prefixes = family(spec).WRAPPER_PREFIXES
    for k in keys:
        name = k
        for prefix in prefixes:
            if k.startswith(prefix):
                name = k[len(prefix):]
                break
        out[k] = name
    return out


def convert_state_dict(
    spec: ModelSpec, tensors: Mapping[str, np.ndarray], *, where: str = "checkpoint"
) -> dict:
    """Turn a (lazy) mapping of checkpoint tensors into our nested params dict (numpy)."""
    shapes = param_shapes(spec)
    params = _map_shapes(shapes, lambda s: np.zeros(s, np.float32))
    renamed = strip_wrapper_prefix(spec, list(tensors))
    by_name: dict[str, str] = {}
    for orig, name in renamed.items():
        by_name.setdefault(name, orig)
    ignored = [re.compile(p) for p in family(spec).IGNORED_KEYS]

    used: set[str] = set()
    missing: list[str] = []
    mismatched: list[str] = []
    for e in key_map(spec):
        found = next((by_name[k] for k in e.keys if k in by_name), None)
        if found is None:
            if not e.optional:
                missing.append(e.keys[0])
            continue
        used.add(found)
        arr = tensors[found]
        if tuple(arr.shape) != e.torch_shape:
            mismatched.append(f"{found}: expected {e.torch_shape}, got {tuple(arr.shape)}")
            continue
        value = e.transform(np.asarray(arr, dtype=np.float32))
        target = params
        for part in e.path[:-1]:
            target = target[part]
        index = tuple(i for i in (e.layer, e.slot) if i is not None)
        if index:
            dest = target[e.path[-1]]
            if e.slot is not None:
                # qkv slot axis sits right after the input dim (kernel) or first (bias)
                idx = (e.layer,) + ((slice(None),) if value.ndim == 3 else ()) + (e.slot,)
                dest[idx] = value
            else:
                dest[e.layer] = value
        else:
            target[e.path[-1]] = value.reshape(target[e.path[-1]].shape)

    unexpected = [
        k for k, name in renamed.items()
        if k not in used and not any(p.search(name) for p in ignored)
    ]
    if missing or unexpected or mismatched:
        lines = [f"{where}: cannot load as {spec.family} "
                 f"({spec.num_layers} layers, width {spec.hidden_size})"]
        for title, items in (("missing keys", missing), ("unexpected keys", unexpected),
                             ("shape mismatches", mismatched)):
            if items:
                lines.append(f"  {title} ({len(items)}): " + ", ".join(sorted(items)[:20])
                             + (" ..." if len(items) > 20 else ""))
        raise CheckpointError("\n".join(lines))
    return params
