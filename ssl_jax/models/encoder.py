"""The encoder forward pass: embeddings per family, the shared layer stack, pooling.

Written for one example (pixels (H, W, C)) and vmapped over the batch in `forward`: the
per-example code has no batch bookkeeping, and XLA batches every matmul exactly as a
batch-native version would (measured in benchmarks/).
"""

from __future__ import annotations

from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.core.resample import resize_axes
from ssl_jax.models.convert import param_shapes
from ssl_jax.models.fusion import RolloutOptions, rollout_step
from ssl_jax.models.inputs import check_pixel_values
from ssl_jax.models.layers import Attention, Block, MAPHead, layer_norm, rope_tables
from ssl_jax.models.spec import ModelSpec, TokenLayout

AttentionMode = Literal["none", "cls", "full", "rollout"]


def _ln(spec: ModelSpec, p: dict, x: jax.Array, dtype) -> jax.Array:
    return layer_norm(spec.layer_norm_eps, dtype).apply({"params": p}, x)


def interpolate_positions(spec: ModelSpec, table: jax.Array, grid_h: int, grid_w: int):
    """Patch position table (grid_h*grid_w, D) for the given grid, as transformers does it.

    DINOv2-reg: bicubic with antialias (PIL-style a=-0.5), always applied. MAE, CLIP, SigLIP
    (`interpolate_pos_encoding=True`): plain torch bicubic (a=-0.75, clamped taps). Both in
    float32. At the checkpoint's own grid the table is used as stored.
    """
    g = spec.pos_grid
    patch = table[int(spec.has_cls):]
    if (grid_h, grid_w) == (g, g):
        return patch
    grid = patch.reshape(g, g, -1).astype(jnp.float32)
    out = resize_axes(grid, (grid_h, grid_w), axes=(0, 1), method="bicubic",
                      antialias=spec.family == "dinov2")
    return out.reshape(grid_h * grid_w, -1).astype(table.dtype)


def patchify(pixels: jax.Array, patch: int) -> jax.Array:
    """(H, W, C) → (num_patches, patch*patch*C), row-major patches, (ph, pw, C) inside."""
    h, w, c = pixels.shape
    x = pixels.reshape(h // patch, patch, w // patch, patch, c).transpose(0, 2, 1, 3, 4)
    return x.reshape((h // patch) * (w // patch), patch * patch * c)


def embed(spec: ModelSpec, p: dict, pixels: jax.Array, dtype) -> tuple[jax.Array, TokenLayout]:
    """Token sequence [CLS?, registers, patches] of one image, as the layer stack sees it."""
    layout = spec.layout(pixels.shape[0], pixels.shape[1])
    kernel = p["patch"]["kernel"]
    x = patchify(pixels.astype(dtype), spec.patch_size) @ kernel.reshape(-1, kernel.shape[-1]).astype(dtype)
    if "bias" in p["patch"]:
        x = x + p["patch"]["bias"].astype(dtype)
    d = x.shape[-1]
    cls = p["cls"].astype(dtype)[None] if spec.has_cls else jnp.zeros((0, d), dtype)
    if spec.rope_theta is None:
        pos = p["pos"]
        x = x + interpolate_positions(spec, pos, layout.grid_h, layout.grid_w).astype(dtype)
        if spec.has_cls:
            cls = cls + pos[:1].astype(dtype)
    regs = p["registers"].astype(dtype) if spec.num_registers else jnp.zeros((0, d), dtype)
    # DINOv2 registers are inserted after the position embedding: they get none.
    return jnp.concatenate([cls, regs, x], axis=0), layout


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


def encode(
    spec: ModelSpec,
    params: dict,
    pixels: jax.Array,
    *,
    attentions: AttentionMode = "none",
    layers: tuple[int, ...] = (),
    hidden_states: bool = False,
    dtype=jnp.float32,
    rollout: RolloutOptions | None = None,
    probs_delta: jax.Array | None = None,
    state_tap: tuple[int, jax.Array] | None = None,
    stack_attentions: bool = True,
    check_inputs: bool = True,
) -> dict:
    """Forward one image (H, W, C) → dict of per-example outputs (see `forward`).

    attentions="rollout": attention rollout (`ssl_jax.models.fusion.rollout_step`, `rollout` options,
    default the study's) is folded into the layer loop, carrying one T×T matrix; the CLS row
    after each layer in `layers` is returned as attentions (L', T).
    Gradient taps (used by `ssl_jax.attention.gradients`, zeros leave the forward unchanged):
    probs_delta (L, heads, T, T) is added to every layer's attention probabilities;
    state_tap (s, delta (T, D)) adds delta to hidden state s (0 = embeddings, l + 1 = output
    of layer l).
    Concrete pixels must be preprocessed (`ssl_jax.models.inputs.check_pixel_values`, a
    `UserError` otherwise; check_inputs=False skips it); under jit/vmap/grad nothing is checked.
    """
    if check_inputs:
        check_pixel_values(spec, pixels)
    x, layout = embed(spec, params["embed"], pixels, dtype)
    if spec.pre_norm:
        x = _ln(spec, params["pre_norm"], x, dtype)
    rope = rope_tables(spec, layout.grid_h, layout.grid_w) if spec.rope_theta is not None else None
    block = Block(spec, dtype)
    if attentions == "rollout":
        rollout = rollout if rollout is not None else RolloutOptions()
        roll_start, roll_end = rollout.layer_range(spec.num_layers)
        joint = jnp.eye(layout.num_tokens, dtype=jnp.float32)

    n_layers = spec.num_layers
    if state_tap is not None and not 0 <= state_tap[0] <= n_layers:
        raise ValueError(f"state_tap index {state_tap[0]} outside 0..{n_layers}")
    if state_tap is not None and state_tap[0] == 0:
        x = x + state_tap[1].astype(x.dtype)
    # Layers run under lax.scan over the stacked block params: one layer's weights are live
    # at a time (an unrolled loop of `params[i]` slices made XLA copy all 12 layers' weights
    # up front: 330 MB of temporaries for ViT-B) and batch-1 forwards got 11% faster.
    # Per-layer outputs are produced for every layer and the requested ones picked after.
    # SigLIP has no CLS token: its "cls" attention is the MAP head's probe attention.
    want_rows = attentions == "cls" and spec.has_cls
    want_full = attentions == "full"
    need_probs = want_rows or want_full or attentions == "rollout" or probs_delta is not None

    def layer(carry, xs):
        x, joint = carry
        p_i, i, delta_i = xs
        if delta_i is not None:
            with nn.intercept_methods(_probability_tap(delta_i)):
                x, probs = block.apply({"params": p_i}, x, rope, layout.num_prefix,
                                       return_probs=True)
        else:
            x, probs = block.apply({"params": p_i}, x, rope, layout.num_prefix,
                                   return_probs=need_probs)
        if state_tap is not None:
            x = jnp.where(i + 1 == state_tap[0], x + state_tap[1].astype(x.dtype), x)
        ys = {}
        if want_full:
            ys["attn"] = probs
        elif want_rows:
            ys["attn"] = probs[:, 0]
        if attentions == "rollout":
            stepped = rollout_step(joint, probs, rollout)
            joint = jnp.where((i >= roll_start) & (i < roll_end), stepped, joint)
            ys["attn"] = joint[0]
        if hidden_states:
            ys["state"] = x
        return (x, joint), ys

    joint0 = joint if attentions == "rollout" else None
    x_embedded = x
    xs = (params["blocks"], jnp.arange(n_layers), probs_delta)
    (x, _), per_layer = jax.lax.scan(layer, (x, joint0), xs)
    # static layer subset: a contiguous range is a slice, anything else a gather
    if "attn" in per_layer:
        lo = layers[0] if layers else 0
        if tuple(layers) == tuple(range(lo, lo + len(layers))):
            attn = per_layer["attn"][lo:lo + len(layers)]
        else:
            attn = per_layer["attn"][jnp.asarray(layers, dtype=jnp.int32)]
    else:
        attn = None
    out: dict = {}
    last = _ln(spec, params["final_norm"], x, dtype) if spec.final_norm == "all" else x
    out["last_hidden_state"] = last
    if spec.pooler == "cls":
        out["pooled"] = last[0]
    elif spec.pooler == "cls_postnorm":
        out["pooled"] = _ln(spec, params["post_norm"], x[0], dtype)
    elif spec.pooler == "map":
        out["pooled"], probe = MAPHead(spec, dtype).apply({"params": params["head"]}, last)
        if attentions != "none":
            out["probe_attention"] = probe
            if attentions == "cls":
                attn = probe[None]
    if hidden_states:
        out["hidden_states"] = jnp.concatenate([x_embedded[None], per_layer["state"]])
    if attentions != "none":
        # (L', ...) stacked by the scan; stack_attentions=False gives a tuple of per-layer
        # arrays (the older unrolled loop needed it; kept for callers that iterate layers)
        out["attentions"] = attn if stack_attentions else tuple(attn)
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
