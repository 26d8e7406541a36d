"""Public model API: `load_model`, `random_model`, `forward`."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ssl_jax.models.checkpoint import read_json, read_weights, resolve_source
from ssl_jax.models.collectors import AttentionMode, HiddenStates, attention_collectors
from ssl_jax.models.config import bundled_spec, spec_from_config
from ssl_jax.models.convert import CheckpointError, convert_state_dict
from ssl_jax.models.encoder import encode, init_params
from ssl_jax.models.fusion import RolloutOptions
from ssl_jax.models.inputs import check_pixel_values
from ssl_jax.models.spec import ConfigError, ModelSpec, TokenLayout


@struct.dataclass
class Model:
    """An encoder: static spec + params pytree. Pass it to `forward`; it is itself a pytree."""

    params: dict
    spec: ModelSpec = struct.field(pytree_node=False)
    dtype: Any = struct.field(pytree_node=False, default=jnp.float32)
    source: str = struct.field(pytree_node=False, default="")

    @property
    def num_params(self) -> int:
        return int(sum(np.prod(a.shape) for a in jax.tree.leaves(self.params)))

    def layout(self, height: int | None = None, width: int | None = None) -> TokenLayout:
        h, w = self.spec.default_input_size
        return self.spec.layout(height or h, width or w)


@struct.dataclass
class EncoderOutput:
    """Batched outputs; each field has one rank whatever the mode, None when not asked for:
    attentions (B, L', heads, T, T) ("full"), cls_attentions (B, L', heads, T) ("cls", CLS
    models), rollout (B, L', T) ("rollout": the rollout CLS row after each layer),
    probe_attention (B, heads, T) (MAP-head models, any mode but "none"), hidden_states
    (B, L+1, T, D). attention_layers: the model layers along axis 1 of the per-layer field."""

    last_hidden_state: jax.Array
    pooled: jax.Array | None = None
    hidden_states: jax.Array | None = None
    attentions: jax.Array | None = None
    cls_attentions: jax.Array | None = None
    rollout: jax.Array | None = None
    probe_attention: jax.Array | None = None
    layout: TokenLayout | None = struct.field(pytree_node=False, default=None)
    attention_layers: tuple[int, ...] = struct.field(pytree_node=False, default=())


def _canonical_dtype(dtype) -> Any:
    dt = jnp.dtype(dtype)
    if dt not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
        raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dt}")
    return dt.type


def load_model(
    source: str | os.PathLike,
    *,
    dtype=jnp.float32,
    revision: str | None = None,
    local_files_only: bool | None = None,
    allow_pickle: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> Model:
    """Load one of the five encoders from an alias, a hub id or a local checkpoint folder.

    Parameters are kept in float32; `dtype` is the compute dtype (bfloat16 keeps softmax in
    float32). Hub ids resolve through the standard Hugging Face cache first, so cached
    checkpoints load offline.
    """
    compute_dtype = _canonical_dtype(dtype)
    folder = resolve_source(source, revision=revision, local_files_only=local_files_only,
                            cache_dir=cache_dir)
    config = read_json(folder / "config.json")
    pre_path = folder / "preprocessor_config.json"
    pre = read_json(pre_path) if pre_path.exists() else None
    try:
        spec = spec_from_config(config, pre, where=str(folder / "config.json"))
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    tensors, files = read_weights(folder, allow_pickle=allow_pickle)
    params = convert_state_dict(spec, tensors, where=f"{folder} ({files})")
    params = jax.tree.map(jnp.asarray, params)
    return Model(params=params, spec=spec, dtype=compute_dtype, source=str(folder))


def random_model(alias_or_spec: str | ModelSpec, key: jax.Array | int = 0, *, dtype=jnp.float32) -> Model:
    """A model with the real architecture of `alias` and random weights (no download)."""
    if isinstance(alias_or_spec, ModelSpec):
        spec, name = alias_or_spec, alias_or_spec.family
    else:
        spec, name = bundled_spec(alias_or_spec), alias_or_spec
    if isinstance(key, int):
        key = jax.random.key(key)
    return Model(params=init_params(spec, key), spec=spec, dtype=_canonical_dtype(dtype),
                 source=f"random:{name}")


# ---- forward ---------------------------------------------------------------------------------

@functools.partial(jax.jit, static_argnames=("spec", "collect", "dtype"))
def _forward(params, pixels, *, spec, collect, dtype):
    fn = functools.partial(encode, spec, collect=collect, dtype=dtype)
    return jax.vmap(fn, in_axes=(None, 0))(params, pixels)


def _check_pixels(spec: ModelSpec, pixels, check_inputs: bool = True) -> jax.Array:
    shape = getattr(pixels, "shape", None)
    if shape is None or len(shape) != 4:
        raise ValueError(f"pixels must be a batch (B, H, W, C) in NHWC order, got shape {shape}")
    if shape[-1] != spec.num_channels:
        hint = " (NCHW input? transpose to NHWC)" if shape[1] == spec.num_channels else ""
        raise ValueError(f"pixels must have {spec.num_channels} channels last, got shape "
                         f"{tuple(shape)}{hint}")
    spec.layout(shape[1], shape[2])  # raises for non-multiples of the patch size
    if check_inputs:
        check_pixel_values(spec, pixels)
    return jnp.asarray(pixels, jnp.float32)


def forward(
    model: Model,
    pixels,
    *,
    attentions: AttentionMode = "none",
    layers: Sequence[int] | None = None,
    hidden_states: bool = False,
    dtype=None,
    rollout=None,
    check_inputs: bool = True,
) -> EncoderOutput:
    """Run the encoder on a batch of preprocessed images (B, H, W, C) float32.

    Pixels must come from `ssl_jax.preprocess` (or the same processor): integer dtypes (raw
    0..255 images), non-finite values and values beyond `pixel_bound(spec)` (10 for the five
    study models, whose preprocessed pixels lie within [-2.12, 2.64]) raise a `UserError`
    unless check_inputs=False. The check is skipped for tracers (under jit/grad/vmap).

    attentions (sugar for `ssl_jax.models.collectors`): "none" (fastest path), "full"
    (`attentions` (B, L', heads, T, T)), "cls" (`cls_attentions`, the CLS → all tokens rows
    (B, L', heads, T); none for SigLIP, which has no CLS) or "rollout" (attention rollout
    folded into the layer loop: `rollout`, the CLS row of the rollout after each layer,
    (B, L', T), never holding more than one T×T matrix per image; CLS models only). A
    MAP-head model (SigLIP) also returns `probe_attention` (B, heads, T) in every mode but
    "none".
    layers: which layers' attentions to keep (default all); negative indices count from the end.
    rollout: `ssl_jax.attention.RolloutOptions` for "rollout" (default: the study's rollout);
    with a start/end layer, `layers` defaults to that range.
    Compiled once per (model spec, input shape, options).
    """
    spec = model.spec
    if attentions not in ("none", "cls", "full", "rollout"):
        raise ValueError(
            f"attentions must be 'none', 'cls', 'full' or 'rollout', got {attentions!r}")
    if rollout is not None and attentions != "rollout":
        raise ValueError("rollout= options apply to attentions='rollout' only")
    if attentions == "rollout" and not spec.has_cls:
        raise ValueError(f"attentions='rollout' needs a CLS token; {spec.family} has none "
                         "(SigLIP: use attentions='full' with mean_map, or probe_map)")
    pixels = _check_pixels(spec, pixels, check_inputs)
    n = spec.num_layers
    if layers is None:
        chosen = tuple(range(n))
    else:
        chosen = []
        for i in layers:
            if not -n <= int(i) < n:
                raise ValueError(f"layer {i} out of range for a {n}-layer model")
            chosen.append(int(i) % n)
        chosen = tuple(sorted(set(chosen)))
    if attentions == "rollout":
        rollout = rollout if rollout is not None else RolloutOptions()
        start, end = rollout.layer_range(n)
        if layers is None:
            chosen = tuple(range(start, end))
        outside = [i for i in chosen if not start <= i < end]
        if outside:
            raise ValueError(f"layers {outside} lie outside the rollout range "
                             f"[start_layer={start}, end_layer={end})")
    compute = _canonical_dtype(dtype) if dtype is not None else model.dtype
    collect = attention_collectors(spec, attentions, chosen, rollout)
    if hidden_states:
        collect += (HiddenStates(),)
    out = _forward(model.params, pixels, spec=spec, collect=collect, dtype=compute)
    layout = spec.layout(pixels.shape[1], pixels.shape[2])
    per_layer = any(k in out for k in ("attentions", "cls_attentions", "rollout"))
    return EncoderOutput(layout=layout, attention_layers=chosen if per_layer else (), **out)
