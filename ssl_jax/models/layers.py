"""Transformer pieces shared by the encoder families, written per example: x is (tokens, dim).

The batch axis is added by `jax.vmap` in `ssl_jax.models.model.forward`. Flax linen modules are only ever used
through `module.apply({"params": p}, ...)`: parameters live in plain dicts.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax.models.spec import Activation, ModelSpec

Dtype = Any


def activation_fn(name: Activation):
    """transformers' activations: "gelu" is exact erf GELU (jax defaults to tanh!)."""
    if name == "gelu":
        return lambda x: jax.nn.gelu(x, approximate=False)
    if name == "gelu_tanh":
        return lambda x: jax.nn.gelu(x, approximate=True)
    if name == "quick_gelu":
        return lambda x: x * jax.nn.sigmoid(1.702 * x)
    raise ValueError(f"unknown activation {name!r}")


def layer_norm(eps: float, dtype: Dtype, name: str | None = None) -> nn.LayerNorm:
    # two-pass variance as torch computes it (flax's fast variance loses digits when |mean| >> std)
    return nn.LayerNorm(epsilon=eps, use_fast_variance=False, dtype=dtype, name=name)


def apply_layer_norm(spec: ModelSpec, p: dict, x: jax.Array, dtype: Dtype) -> jax.Array:
    """The spec's LayerNorm with params `p` ({"scale", "bias"}) applied to x."""
    return layer_norm(spec.layer_norm_eps, dtype).apply({"params": p}, x)


def layer_norm_shapes(spec: ModelSpec) -> dict:
    return {"scale": (spec.hidden_size,), "bias": (spec.hidden_size,)}


def block_shapes(spec: ModelSpec) -> dict:
    """Shapes of one `Block`'s params. A bias the architecture lacks is no parameter at all
    (DINOv3's key bias): the fused qkv bias holds only the present slots,
    `spec.qkv_bias_slots`, in order."""
    d, h, dh, m = spec.hidden_size, spec.num_heads, spec.head_dim, spec.mlp_dim
    ln = layer_norm_shapes(spec)
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
    return block


def map_head_shapes(spec: ModelSpec) -> dict:
    """Shapes of the `MAPHead` params."""
    d, h, dh, m = spec.hidden_size, spec.num_heads, spec.head_dim, spec.mlp_dim
    proj = {"kernel": (d, h, dh), "bias": (h, dh)}
    return {
        "probe": (1, d), "query": proj, "key": proj, "value": proj,
        "out": {"kernel": (h, dh, d), "bias": (d,)}, "norm": layer_norm_shapes(spec),
        "mlp": {"fc1": {"kernel": (d, m), "bias": (m,)}, "fc2": {"kernel": (m, d), "bias": (d,)}},
    }


def rope_tables(spec: ModelSpec, grid_h: int, grid_w: int) -> tuple[jax.Array, jax.Array]:
    """DINOv3's 2-D RoPE cos/sin tables, (grid_h*grid_w, head_dim), float32.

    Patch centres (i+0.5)/n mapped to [-1, 1] per axis; 16 frequencies theta^(-k/16);
    angles laid out [y·f | x·f] and tiled twice (half-split rotation convention).
    """
    assert spec.rope_theta is not None
    dh = spec.head_dim
    inv_freq = 1.0 / spec.rope_theta ** jnp.arange(0, 1, 4 / dh, dtype=jnp.float32)
    ch = jnp.arange(0.5, grid_h, dtype=jnp.float32) / grid_h
    cw = jnp.arange(0.5, grid_w, dtype=jnp.float32) / grid_w
    coords = jnp.stack(jnp.meshgrid(ch, cw, indexing="ij"), axis=-1).reshape(-1, 2)
    coords = 2.0 * coords - 1.0
    angles = 2 * jnp.pi * coords[:, :, None] * inv_freq[None, None, :]
    angles = jnp.tile(angles.reshape(angles.shape[0], -1), (1, 2))
    return jnp.cos(angles), jnp.sin(angles)


def _apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array, num_prefix: int) -> jax.Array:
    """Rotate patch tokens of x (T, H, Dh); prefix tokens (CLS, registers) stay as they are."""
    prefix, patches = x[:num_prefix], x[num_prefix:]
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-patches[..., half:], patches[..., :half]], axis=-1)
    cos, sin = cos[:, None, :].astype(x.dtype), sin[:, None, :].astype(x.dtype)
    return jnp.concatenate([prefix, patches * cos + rotated * sin], axis=0)


class QKV(nn.Module):
    """The fused q/k/v projection: kernel (dim, 3, heads, head_dim) and a bias that holds only
    the slots the architecture has (`spec.qkv_bias_slots`), (n_present, heads, head_dim), or
    no bias parameter when none has one.

    An absent slot's bias is a constant zero built here, never a parameter: it cannot be
    initialised, trained or exported as anything else. (It matters: DINOv3 has no key bias,
    and with RoPE a key bias is not softmax-invariant, since each key rotates it differently.)
    """

    spec: ModelSpec
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        s = self.spec
        features = (3, s.num_heads, s.head_dim)
        kernel = self.param("kernel", nn.initializers.lecun_normal(batch_axis=()),
                            (x.shape[-1], *features))
        slots = s.qkv_bias_slots
        bias = (self.param("bias", nn.initializers.zeros, (len(slots), *features[1:]))
                if slots else None)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        out = jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))
        if bias is None:
            return out
        if len(slots) < 3:
            zero = jnp.zeros((1, *features[1:]), bias.dtype)
            parts = [bias[slots.index(i)][None] if i in slots else zero for i in range(3)]
            bias = jnp.concatenate(parts, axis=0)
        return out + bias


class Attention(nn.Module):
    """Multi-head self-attention that can return its post-softmax probabilities.

    q, k and v share one fused projection (`QKV`); the output projection has a bias when
    `spec.proj_bias`.
    """

    spec: ModelSpec
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, rope=None, num_prefix: int = 0, return_probs: bool = False):
        s = self.spec
        qkv = QKV(s, self.dtype, name="qkv")(x)
        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
        if rope is not None:
            q = _apply_rope(q, *rope, num_prefix)
            k = _apply_rope(k, *rope, num_prefix)
        # head_dim**-0.5 is a power of two for head_dim 64: scaling q is bit-identical to
        # scaling the scores (as transformers does) and costs T·D instead of T².
        q = q * jnp.asarray(s.head_dim**-0.5, q.dtype)
        # Per-head 2-D matmuls rather than one einsum with a heads batch dimension: XLA:CPU
        # runs a dot with batch dimensions (heads, plus the vmapped images) 2-2.5x slower
        # than the same work as separate 2-D dots (batch 8, T=261: 99 ms vs 41 ms per layer;
        # torch's bmm: 33 ms), which was half of the forward's time at batch 32.
        # jax.nn.dot_product_attention (XLA's reference lowering on CPU) is no faster.
        outs, head_probs = [], []
        for h in range(s.num_heads):
            scores = (q[:, h] @ k[:, h].T).astype(jnp.float32)
            p = jax.nn.softmax(scores, axis=-1)
            outs.append(p.astype(v.dtype) @ v[:, h])
            head_probs.append(p)
        out = jnp.stack(outs, axis=1)  # (T, heads, head_dim)
        probs = jnp.stack(head_probs) if return_probs else None  # (heads, T, T)
        out = nn.DenseGeneral(x.shape[-1], axis=(-2, -1), use_bias=s.proj_bias, dtype=self.dtype,
                              name="out")(out)
        return out, probs


class MLP(nn.Module):
    hidden: int
    activation: Activation
    dtype: Dtype = jnp.float32
    use_bias: bool = True

    @nn.compact
    def __call__(self, x):
        h = nn.Dense(self.hidden, use_bias=self.use_bias, dtype=self.dtype, name="fc1")(x)
        h = activation_fn(self.activation)(h)
        return nn.Dense(x.shape[-1], use_bias=self.use_bias, dtype=self.dtype, name="fc2")(h)


class Block(nn.Module):
    """Pre-norm transformer layer, with optional layerscale (DINOv2/DINOv3)."""

    spec: ModelSpec
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, rope=None, num_prefix: int = 0, return_probs: bool = False):
        s = self.spec
        a, probs = Attention(s, self.dtype, name="attn")(
            layer_norm(s.layer_norm_eps, self.dtype, "norm1")(x), rope, num_prefix, return_probs
        )
        if s.layerscale:
            a = a * self.param("ls1", nn.initializers.ones, (s.hidden_size,)).astype(a.dtype)
        x = x + a
        m = MLP(s.mlp_dim, s.activation, self.dtype, s.mlp_bias, name="mlp")(
            layer_norm(s.layer_norm_eps, self.dtype, "norm2")(x)
        )
        if s.layerscale:
            m = m * self.param("ls2", nn.initializers.ones, (s.hidden_size,)).astype(m.dtype)
        return x + m, probs


class MAPHead(nn.Module):
    """SigLIP's multihead attention pooling: one learned probe attends over all tokens."""

    spec: ModelSpec
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        s = self.spec
        probe = self.param("probe", nn.initializers.normal(1.0), (1, s.hidden_size))
        dense = lambda name: nn.DenseGeneral(  # noqa: E731
            (s.num_heads, s.head_dim), dtype=self.dtype, name=name)
        q = dense("query")(probe.astype(x.dtype)) * jnp.asarray(s.head_dim**-0.5, x.dtype)
        k, v = dense("key")(x), dense("value")(x)
        scores = jnp.einsum("qhd,khd->hqk", q, k).astype(jnp.float32)
        probs = jax.nn.softmax(scores, axis=-1)  # (heads, 1, T)
        r = jnp.einsum("hqk,khd->qhd", probs.astype(v.dtype), v)
        r = nn.DenseGeneral(s.hidden_size, axis=(-2, -1), dtype=self.dtype, name="out")(r)
        y = r + MLP(s.mlp_dim, s.activation, self.dtype, name="mlp")(
            layer_norm(s.layer_norm_eps, self.dtype, "norm")(r)
        )
        return y[0], probs[:, 0]
