"""Hugging Face state dict → ssl_jax params: one explicit key map per family.

Every entry names the checkpoint key(s) it accepts (the hub's legacy v4 names, which
transformers 5 also writes on `save_pretrained`, and the v5 module names), where the tensor
goes in our params tree, how it is transformed and the torch shape it must have. All
problems — missing, unexpected and mis-shaped keys — are collected and reported together.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from ssl_jax.core.errors import UserError
from ssl_jax.models.spec import ModelSpec


class CheckpointError(UserError):
    """A checkpoint that cannot be loaded; the message names the file, key and shapes."""


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

def _identity(a: np.ndarray) -> np.ndarray:
    return a


def _dense(a: np.ndarray) -> np.ndarray:  # nn.Linear (out, in) → Dense kernel (in, out)
    return a.T


def _conv(a: np.ndarray) -> np.ndarray:  # Conv2d (O, I, kh, kw) → HWIO
    return a.transpose(2, 3, 1, 0)


def _reshape(shape: tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray]:
    return lambda a: a.reshape(shape)


def _heads_in(d: int, h: int, dh: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda a: a.T.reshape(d, h, dh)  # (h*dh, d) → (d, h, dh)


def _heads_out(d: int, h: int, dh: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda a: a.T.reshape(h, dh, d)  # (d, h*dh) → (h, dh, d)


# ---- our params tree: shapes ----------------------------------------------------------------

def param_shapes(spec: ModelSpec) -> dict:
    """Nested dict of shapes of the params tree for `spec` (the converter's target)."""
    d, h, dh, m, n_l = spec.hidden_size, spec.num_heads, spec.head_dim, spec.mlp_dim, spec.num_layers
    p, c = spec.patch_size, spec.num_channels
    ln = {"scale": (d,), "bias": (d,)}
    embed: dict = {"patch": {"kernel": (p, p, c, d)}}
    if spec.patch_bias:
        embed["patch"]["bias"] = (d,)
    if spec.has_cls:
        embed["cls"] = (d,)
    if spec.num_registers:
        embed["registers"] = (spec.num_registers, d)
    if spec.rope_theta is None:
        embed["pos"] = (int(spec.has_cls) + spec.pos_grid**2, d)
    if spec.family in ("dinov2", "dinov3"):
        embed["mask_token"] = (d,)
    # a bias the architecture lacks is no parameter at all (DINOv3's key bias): the fused
    # qkv bias holds only the present slots, `spec.qkv_bias_slots`, in order
    qkv: dict = {"kernel": (d, 3, h, dh)}
    if spec.qkv_bias_slots:
        qkv["bias"] = (len(spec.qkv_bias_slots), h, dh)
    out: dict = {"kernel": (h, dh, d)}
    fc1: dict = {"kernel": (d, m)}
    fc2: dict = {"kernel": (m, d)}
    if spec.proj_bias:
        out["bias"] = (d,)
    if spec.mlp_bias:
        fc1["bias"], fc2["bias"] = (m,), (d,)
    block = {"norm1": ln, "attn": {"qkv": qkv, "out": out}, "norm2": ln,
             "mlp": {"fc1": fc1, "fc2": fc2}}
    if spec.layerscale:
        block["ls1"], block["ls2"] = (d,), (d,)
    tree: dict = {"embed": embed, "blocks": _map_shapes(block, lambda s: (n_l, *s))}
    if spec.pre_norm:
        tree["pre_norm"] = ln
    if spec.final_norm == "all":
        tree["final_norm"] = ln
    if spec.pooler == "cls_postnorm":
        tree["post_norm"] = ln
    if spec.pooler == "map":
        proj = {"kernel": (d, h, dh), "bias": (h, dh)}
        tree["head"] = {
            "probe": (1, d), "query": proj, "key": proj, "value": proj,
            "out": {"kernel": (h, dh, d), "bias": (d,)}, "norm": ln,
            "mlp": {"fc1": {"kernel": (d, m), "bias": (m,)}, "fc2": {"kernel": (m, d), "bias": (d,)}},
        }
    return tree


def _map_shapes(tree, fn):
    if isinstance(tree, dict):
        return {k: _map_shapes(v, fn) for k, v in tree.items()}
    return fn(tree)


# ---- key maps --------------------------------------------------------------------------------

# Prefixes a wrapper model puts in front of the vision encoder's keys.
_WRAPPER_PREFIXES = {
    "dinov2": ("dinov2_with_registers.",),
    "dinov3": (),
    "mae": ("vit.",),
    "clip": ("vision_model.",),
    "siglip": ("vision_model.",),
}

# Keys of other towers / buffers that a vision-encoder load ignores on purpose.
_IGNORED = {
    "dinov2": (r"^classifier\.",),
    "dinov3": (r"^classifier\.", r"rope_embeddings\.inv_freq$"),
    "mae": (r"^decoder\.",),
    "clip": (r"^text_model\.", r"^text_projection\.", r"^visual_projection\.", r"^logit_scale$",
             r"position_ids$"),
    "siglip": (r"^text_model\.", r"^logit_scale$", r"^logit_bias$", r"position_ids$"),
}


def _layer_entries(spec: ModelSpec, i: int, names: Mapping[str, tuple[str, ...]]) -> list[Entry]:
    """Entries of one transformer layer. `names` maps our part → accepted key stems. Biases
    the architecture lacks (spec.qkv_bias, proj_bias, mlp_bias) have no entry: a checkpoint
    that carries one is refused (unexpected key), as it describes a different model."""
    d, h, dh, m = spec.hidden_size, spec.num_heads, spec.head_dim, spec.mlp_dim
    out: list[Entry] = []

    def add(part, suffix, path, shape, fn, **kw):
        out.append(Entry(tuple(f"{stem}.{suffix}" for stem in names[part]), path, shape, fn,
                         layer=i, **kw))

    for part, path in (("norm1", "norm1"), ("norm2", "norm2")):
        add(part, "weight", ("blocks", path, "scale"), (d,), _identity)
        add(part, "bias", ("blocks", path, "bias"), (d,), _identity)
    for slot, part in enumerate(("q", "k", "v")):
        add(part, "weight", ("blocks", "attn", "qkv", "kernel"), (h * dh, d), _heads_in(d, h, dh),
            slot=slot)
        if slot in spec.qkv_bias_slots:
            add(part, "bias", ("blocks", "attn", "qkv", "bias"), (h * dh,), _reshape((h, dh)),
                slot=spec.qkv_bias_slots.index(slot))
    add("o", "weight", ("blocks", "attn", "out", "kernel"), (d, h * dh), _heads_out(d, h, dh))
    if spec.proj_bias:
        add("o", "bias", ("blocks", "attn", "out", "bias"), (d,), _identity)
    add("fc1", "weight", ("blocks", "mlp", "fc1", "kernel"), (m, d), _dense)
    add("fc2", "weight", ("blocks", "mlp", "fc2", "kernel"), (d, m), _dense)
    if spec.mlp_bias:
        add("fc1", "bias", ("blocks", "mlp", "fc1", "bias"), (m,), _identity)
        add("fc2", "bias", ("blocks", "mlp", "fc2", "bias"), (d,), _identity)
    if spec.layerscale:
        add("ls1", "lambda1", ("blocks", "ls1"), (d,), _identity)
        add("ls2", "lambda1", ("blocks", "ls2"), (d,), _identity)
    return out


def _ln(keys: tuple[str, ...], path: Path_, d: int) -> list[Entry]:
    return [Entry(tuple(f"{k}.weight" for k in keys), (*path, "scale"), (d,), _identity),
            Entry(tuple(f"{k}.bias" for k in keys), (*path, "bias"), (d,), _identity)]


def key_map(spec: ModelSpec) -> list[Entry]:
    """Every tensor the encoder needs, with the checkpoint names it may carry."""
    d, p, c, r = spec.hidden_size, spec.patch_size, spec.num_channels, spec.num_registers
    n_pos = int(spec.has_cls) + spec.pos_grid**2
    fam = spec.family
    entries: list[Entry] = []
    E = Entry
    if fam == "dinov2":
        entries += [
            E(("embeddings.cls_token",), ("embed", "cls"), (1, 1, d), _reshape((d,))),
            E(("embeddings.mask_token",), ("embed", "mask_token"), (1, d), _reshape((d,)),
              optional=True),
            E(("embeddings.position_embeddings",), ("embed", "pos"), (1, n_pos, d),
              _reshape((n_pos, d))),
            E(("embeddings.patch_embeddings.projection.weight",), ("embed", "patch", "kernel"),
              (d, c, p, p), _conv),
            E(("embeddings.patch_embeddings.projection.bias",), ("embed", "patch", "bias"), (d,),
              _identity),
        ]
        if r:
            entries.append(E(("embeddings.register_tokens",), ("embed", "registers"), (1, r, d),
                             _reshape((r, d))))
        for i in range(spec.num_layers):
            b = f"encoder.layer.{i}"
            entries += _layer_entries(spec, i, {
                "norm1": (f"{b}.norm1",), "norm2": (f"{b}.norm2",),
                "q": (f"{b}.attention.attention.query", f"{b}.attention.q_proj"),
                "k": (f"{b}.attention.attention.key", f"{b}.attention.k_proj"),
                "v": (f"{b}.attention.attention.value", f"{b}.attention.v_proj"),
                "o": (f"{b}.attention.output.dense", f"{b}.attention.o_proj"),
                "fc1": (f"{b}.mlp.fc1",), "fc2": (f"{b}.mlp.fc2",),
                "ls1": (f"{b}.layer_scale1",), "ls2": (f"{b}.layer_scale2",),
            })
        entries += _ln(("layernorm",), ("final_norm",), d)
    elif fam == "dinov3":
        entries += [
            E(("embeddings.cls_token",), ("embed", "cls"), (1, 1, d), _reshape((d,))),
            E(("embeddings.mask_token",), ("embed", "mask_token"), (1, 1, d), _reshape((d,)),
              optional=True),
            E(("embeddings.patch_embeddings.weight",), ("embed", "patch", "kernel"), (d, c, p, p),
              _conv),
            E(("embeddings.patch_embeddings.bias",), ("embed", "patch", "bias"), (d,), _identity),
        ]
        if r:
            entries.append(E(("embeddings.register_tokens",), ("embed", "registers"), (1, r, d),
                             _reshape((r, d))))
        for i in range(spec.num_layers):
            stems = (f"layer.{i}", f"model.layer.{i}")
            entries += _layer_entries(spec, i, {
                "norm1": tuple(f"{s}.norm1" for s in stems),
                "norm2": tuple(f"{s}.norm2" for s in stems),
                "q": tuple(f"{s}.attention.q_proj" for s in stems),
                "k": tuple(f"{s}.attention.k_proj" for s in stems),
                "v": tuple(f"{s}.attention.v_proj" for s in stems),
                "o": tuple(f"{s}.attention.o_proj" for s in stems),
                "fc1": tuple(f"{s}.mlp.up_proj" for s in stems),
                "fc2": tuple(f"{s}.mlp.down_proj" for s in stems),
                "ls1": tuple(f"{s}.layer_scale1" for s in stems),
                "ls2": tuple(f"{s}.layer_scale2" for s in stems),
            })
        entries += _ln(("norm",), ("final_norm",), d)
    elif fam == "mae":
        entries += [
            E(("embeddings.cls_token",), ("embed", "cls"), (1, 1, d), _reshape((d,))),
            E(("embeddings.position_embeddings",), ("embed", "pos"), (1, n_pos, d),
              _reshape((n_pos, d))),
            E(("embeddings.patch_embeddings.projection.weight",), ("embed", "patch", "kernel"),
              (d, c, p, p), _conv),
            E(("embeddings.patch_embeddings.projection.bias",), ("embed", "patch", "bias"), (d,),
              _identity),
        ]
        for i in range(spec.num_layers):
            b, v5 = f"encoder.layer.{i}", f"layers.{i}"
            entries += _layer_entries(spec, i, {
                "norm1": (f"{b}.layernorm_before", f"{v5}.layernorm_before"),
                "norm2": (f"{b}.layernorm_after", f"{v5}.layernorm_after"),
                "q": (f"{b}.attention.attention.query", f"{v5}.attention.q_proj"),
                "k": (f"{b}.attention.attention.key", f"{v5}.attention.k_proj"),
                "v": (f"{b}.attention.attention.value", f"{v5}.attention.v_proj"),
                "o": (f"{b}.attention.output.dense", f"{v5}.attention.o_proj"),
                "fc1": (f"{b}.intermediate.dense", f"{v5}.mlp.fc1"),
                "fc2": (f"{b}.output.dense", f"{v5}.mlp.fc2"),
            })
        entries += _ln(("layernorm",), ("final_norm",), d)
    elif fam in ("clip", "siglip"):
        entries += [
            E(("embeddings.patch_embedding.weight",), ("embed", "patch", "kernel"), (d, c, p, p),
              _conv),
            E(("embeddings.position_embedding.weight",), ("embed", "pos"), (n_pos, d), _identity),
        ]
        if fam == "clip":
            entries.append(E(("embeddings.class_embedding",), ("embed", "cls"), (d,), _identity))
            entries += _ln(("pre_layrnorm",), ("pre_norm",), d)
            entries += _ln(("post_layernorm",), ("post_norm",), d)
        else:
            entries.append(E(("embeddings.patch_embedding.bias",), ("embed", "patch", "bias"),
                             (d,), _identity))
            entries += _ln(("post_layernorm",), ("final_norm",), d)
        for i in range(spec.num_layers):
            b = f"encoder.layers.{i}"
            entries += _layer_entries(spec, i, {
                "norm1": (f"{b}.layer_norm1",), "norm2": (f"{b}.layer_norm2",),
                "q": (f"{b}.self_attn.q_proj",), "k": (f"{b}.self_attn.k_proj",),
                "v": (f"{b}.self_attn.v_proj",), "o": (f"{b}.self_attn.out_proj",),
                "fc1": (f"{b}.mlp.fc1",), "fc2": (f"{b}.mlp.fc2",),
            })
        if spec.pooler == "map":
            entries += _map_head_entries(spec)
    else:  # pragma: no cover - spec_from_config only builds the five families
        raise CheckpointError(f"no key map for family {fam!r}")
    return entries


def _map_head_entries(spec: ModelSpec) -> list[Entry]:
    d, h, dh, m = spec.hidden_size, spec.num_heads, spec.head_dim, spec.mlp_dim
    E = Entry
    entries = [E(("head.probe",), ("head", "probe"), (1, 1, d), _reshape((1, d)))]
    # torch.nn.MultiheadAttention packs [Wq; Wk; Wv] row-wise into in_proj_weight.
    for slot, name in enumerate(("query", "key", "value")):
        rows = slice(slot * d, (slot + 1) * d)
        entries.append(E(("head.attention.in_proj_weight",), ("head", name, "kernel"), (3 * d, d),
                         lambda a, rows=rows: a[rows].T.reshape(d, h, dh)))
        entries.append(E(("head.attention.in_proj_bias",), ("head", name, "bias"), (3 * d,),
                         lambda a, rows=rows: a[rows].reshape(h, dh)))
    entries += [
        E(("head.attention.out_proj.weight",), ("head", "out", "kernel"), (d, d),
          _heads_out(d, h, dh)),
        E(("head.attention.out_proj.bias",), ("head", "out", "bias"), (d,), _identity),
        E(("head.mlp.fc1.weight",), ("head", "mlp", "fc1", "kernel"), (m, d), _dense),
        E(("head.mlp.fc1.bias",), ("head", "mlp", "fc1", "bias"), (m,), _identity),
        E(("head.mlp.fc2.weight",), ("head", "mlp", "fc2", "kernel"), (d, m), _dense),
        E(("head.mlp.fc2.bias",), ("head", "mlp", "fc2", "bias"), (d,), _identity),
    ]
    entries += _ln(("head.layernorm",), ("head", "norm"), d)
    return entries


# ---- conversion --------------------------------------------------------------------------------

def strip_wrapper_prefix(spec: ModelSpec, keys: list[str]) -> dict[str, str]:
    """Map each checkpoint key to its name without the wrapper prefix (vision_model., vit.)."""
    out = {}
    for k in keys:
        name = k
        for prefix in _WRAPPER_PREFIXES[spec.family]:
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
    ignored = [re.compile(p) for p in _IGNORED[spec.family]]

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
