"""The pieces every family's checkpoint key map is built from.

An `Entry` names the checkpoint key(s) one tensor may carry (the hub's legacy v4 names, which
transformers 5 also writes on `save_pretrained`, and the v5 module names), where it goes in
our params tree, how it is transformed and the torch shape it must have. Every transform only
moves elements (reshape / transpose / slice), so the export (`ssl_jax.io.runs`) inverts it
exactly. The families (`ssl_jax.models.families`) list their entries; `convert` applies them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from ssl_jax.models.spec import ModelSpec

Path_ = tuple[str, ...]


@dataclass(frozen=True)
class Entry:
    keys: tuple[str, ...]  # accepted checkpoint names, first = canonical (hub) name
    path: Path_  # where it goes in our params tree
    torch_shape: tuple[int, ...]
    transform: Callable[[np.ndarray], np.ndarray]
    layer: int | None = None  # index into the stacked layer axis
    slot: int | None = None  # index on the fused qkv axis (kernel: q/k/v; bias: present slot)
    optional: bool = False  # absent → zeros (unused mask tokens)


# ---- tensor transforms (torch layout → flax layout) -----------------------------------------

def identity(a: np.ndarray) -> np.ndarray:
    return a


def dense(a: np.ndarray) -> np.ndarray:  # nn.Linear (out, in) → Dense kernel (in, out)
    return a.T


def conv(a: np.ndarray) -> np.ndarray:  # Conv2d (O, I, kh, kw) → HWIO
    return a.transpose(2, 3, 1, 0)


def reshape(shape: tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray]:
    return lambda a: a.reshape(shape)


def heads_in(d: int, h: int, dh: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda a: a.T.reshape(d, h, dh)  # (h*dh, d) → (d, h, dh)


def heads_out(d: int, h: int, dh: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda a: a.T.reshape(h, dh, d)  # (d, h*dh) → (h, dh, d)


# ---- shared entry builders ------------------------------------------------------------------

def layer_entries(spec: ModelSpec, i: int, names: Mapping[str, tuple[str, ...]]) -> list[Entry]:
    """Entries of one transformer layer. `names` maps our part → accepted key stems. Biases
    the architecture lacks (spec.qkv_bias, proj_bias, mlp_bias) have no entry: a checkpoint
    that carries one is refused (unexpected key), as it describes a different model."""
    d, h, dh, m = spec.hidden_size, spec.num_heads, spec.head_dim, spec.mlp_dim
    out: list[Entry] = []

    def add(part, suffix, path, shape, fn, **kw):
        out.append(Entry(tuple(f"{stem}.{suffix}" for stem in names[part]), path, shape, fn,
                         layer=i, **kw))

    for part, path in (("norm1", "norm1"), ("norm2", "norm2")):
        add(part, "weight", ("blocks", path, "scale"), (d,), identity)
        add(part, "bias", ("blocks", path, "bias"), (d,), identity)
    for slot, part in enumerate(("q", "k", "v")):
        add(part, "weight", ("blocks", "attn", "qkv", "kernel"), (h * dh, d), heads_in(d, h, dh),
            slot=slot)
        if slot in spec.qkv_bias_slots:
            add(part, "bias", ("blocks", "attn", "qkv", "bias"), (h * dh,), reshape((h, dh)),
                slot=spec.qkv_bias_slots.index(slot))
    add("o", "weight", ("blocks", "attn", "out", "kernel"), (d, h * dh), heads_out(d, h, dh))
    if spec.proj_bias:
        add("o", "bias", ("blocks", "attn", "out", "bias"), (d,), identity)
    add("fc1", "weight", ("blocks", "mlp", "fc1", "kernel"), (m, d), dense)
    add("fc2", "weight", ("blocks", "mlp", "fc2", "kernel"), (d, m), dense)
    if spec.mlp_bias:
        add("fc1", "bias", ("blocks", "mlp", "fc1", "bias"), (m,), identity)
        add("fc2", "bias", ("blocks", "mlp", "fc2", "bias"), (d,), identity)
    if spec.layerscale:
        add("ls1", "lambda1", ("blocks", "ls1"), (d,), identity)
        add("ls2", "lambda1", ("blocks", "ls2"), (d,), identity)
    return out


def layer_norm_entries(keys: tuple[str, ...], path: Path_, d: int) -> list[Entry]:
    """A LayerNorm's weight/bias under each of `keys` → (*path, scale/bias)."""
    return [Entry(tuple(f"{k}.weight" for k in keys), (*path, "scale"), (d,), identity),
            Entry(tuple(f"{k}.bias" for k in keys), (*path, "bias"), (d,), identity)]



def clip_style_layer_entries(spec: ModelSpec) -> list[Entry]:
    """Every encoder layer of the CLIP / SigLIP vision towers, which name their blocks alike
    (`encoder.layers.{i}.self_attn.q_proj`, `layer_norm1`, `mlp.fc1`, …)."""
    entries: list[Entry] = []
    for i in range(spec.num_layers):
        b = f"encoder.layers.{i}"
        entries += layer_entries(spec, i, {
            "norm1": (f"{b}.layer_norm1",), "norm2": (f"{b}.layer_norm2",),
            "q": (f"{b}.self_attn.q_proj",), "k": (f"{b}.self_attn.k_proj",),
            "v": (f"{b}.self_attn.v_proj",), "o": (f"{b}.self_attn.out_proj",),
            "fc1": (f"{b}.mlp.fc1",), "fc2": (f"{b}.mlp.fc2",),
        })
    return entries
