"""The encoder loop: the family's embeddings, the shared layer stack under `lax.scan`, the
family's pooling; collectors say what to keep from each layer.

Written for one example (pixels (H, W, C)) and vmapped over the batch in `forward`: the
per-example code has no batch bookkeeping, and XLA batches every matmul exactly as a
batch-native version would (measured in benchmarks/).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.models.collectors import Collector
from ssl_jax.models.convert import param_shapes
from ssl_jax.models.families import family
from ssl_jax.models.inputs import check_pixel_values
from ssl_jax.models.layers import Block
from ssl_jax.models.spec import ModelSpec


def encode(
    spec: ModelSpec,
    params: dict,
    pixels: jax.Array,
    collect: Sequence[Collector] = (),
    *,
    dtype=jnp.float32,
    check_inputs: bool = True,
) -> dict:
    """Forward one image (H, W, C) → dict of per-example outputs: "last_hidden_state"
    (T, D), "pooled" (D,) where the family pools, and the fields of the collectors in
    `collect` (`ssl_jax.models.collectors`: attentions, CLS rows, rollout, hidden states,
    probe attention, gradient taps), each with its one fixed rank.

    Concrete pixels must be preprocessed (`ssl_jax.models.inputs.check_pixel_values`, a
    `UserError` otherwise; check_inputs=False skips it); under jit/vmap/grad nothing is checked.
    """
    if check_inputs:
        check_pixel_values(spec, pixels)
    fam = family(spec)
    # taps change the forward, so they act before anything is kept (stable order otherwise)
    collect = tuple(sorted(collect, key=lambda c: not c.is_tap))
    x, layout, rope = fam.embed(spec, params, pixels, dtype)
    carries = tuple(c.start(spec, layout) for c in collect)
    for c in collect:
        x = c.on_embeddings(x)
    embedded = x
    block = Block(spec, dtype)
    need_probs = any(c.needs_probs for c in collect)

    # Layers run under lax.scan over the stacked block params: one layer's weights are live
    # at a time (an unrolled loop of `params[i]` slices made XLA copy all 12 layers' weights
    # up front: 330 MB of temporaries for ViT-B) and batch-1 forwards got 11% faster.
    # Per-layer values are kept for every layer and the requested ones picked after.
    def layer(carry, xs):
        x, carries = carry
        p_i, i, per_layer = xs
        with contextlib.ExitStack() as stack:
            for c, xs_c in zip(collect, per_layer, strict=True):
                tap = c.interceptor(xs_c)
                if tap is not None:
                    stack.enter_context(nn.intercept_methods(tap))
            x, probs = block.apply({"params": p_i}, x, rope, layout.num_prefix,
                                   return_probs=need_probs)
        new_carries, kept = [], []
        for c, carry_c, xs_c in zip(collect, carries, per_layer, strict=True):
            x, carry_c, kept_c = c.step(spec, carry_c, xs_c, i, x, probs)
            new_carries.append(carry_c)
            kept.append(kept_c)
        return (x, tuple(new_carries)), tuple(kept)

    xs = (params["blocks"], jnp.arange(spec.num_layers), tuple(c.scanned() for c in collect))
    (x, carries), kept = jax.lax.scan(layer, (x, carries), xs)
    pooled = fam.pool(spec, params, x, dtype)
    out = {k: v for k, v in pooled.items() if k in ("last_hidden_state", "pooled")}
    for c, carry_c, kept_c in zip(collect, carries, kept, strict=True):
        fields = c.finish(spec, carry_c, kept_c, embedded, pooled)
        twice = sorted(set(fields) & set(out))
        if twice:
            raise ValueError(f"two collectors produce {twice}: pass each collector once")
        out.update(fields)
    return out


def init_params(spec: ModelSpec, key: jax.Array) -> dict:
    """Random parameters with the shapes of a real checkpoint (for demos and tests).

    Weights ~ N(0, 1/fan_in), biases N(0, 0.02), norms 1 ± 0.1, layerscale 0.1 ± 0.05,
    tokens and position tables N(0, 0.5): far enough from uniform that attention is peaked.
    """
    shapes = param_shapes(spec)
    leaves, treedef = jax.tree.flatten(shapes, is_leaf=lambda s: isinstance(s, tuple))
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(
        shapes, is_leaf=lambda s: isinstance(s, tuple))[0]]
    keys = jax.random.split(key, len(leaves))
    out = []
    for path, shape, k in zip(paths, leaves, keys, strict=True):
        if "norm" in path and path.endswith("['scale']"):
            v = 1.0 + 0.1 * jax.random.normal(k, shape)
        elif "['ls" in path:
            v = 0.1 + 0.05 * jax.random.normal(k, shape)
        elif path.endswith("['kernel']"):
            fan_in = _fan_in(path, shape, spec)
            v = jax.random.normal(k, shape) / np.sqrt(fan_in)
        elif path.endswith("['bias']"):
            v = 0.02 * jax.random.normal(k, shape)
        else:  # cls, registers, pos, probe, mask token
            v = 0.5 * jax.random.normal(k, shape)
        out.append(v.astype(jnp.float32))
    return jax.tree.unflatten(treedef, out)


def _fan_in(path: str, shape: tuple[int, ...], spec: ModelSpec) -> int:
    stacked = path.startswith("['blocks']")
    s = shape[1:] if stacked else shape
    if "['patch']" in path:
        return s[0] * s[1] * s[2]
    if "['out']" in path:
        return s[0] * s[1]
    return s[0]
