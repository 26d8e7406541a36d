"""LoRA adapters as a separate pytree, applied in the forward and mergeable for export.

An adapter on a projection with kernel W (in → out) adds scale·dropout(x)·A·B to its output,
scale = alpha / rank, A (in, rank) ~ U(±1/sqrt(in)) (PEFT's kaiming-uniform with a = sqrt 5)
and B (rank, out) = 0, so a fresh adapter leaves the model unchanged. Adapters are stacked over
layers like the block params: {target: {"a": (L, in, r), "b": (L, r, out)}}.

In the forward the adapters ride along inside the block params (extra `lora_*` entries next
to the kernel they adapt, sliced per layer by the encoder's scan) and a flax method
interceptor adds the low-rank path to that projection's output. `merge` folds them into W.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.core.errors import UserError
from ssl_jax.models.spec import ModelSpec

# target → (path of the adapted module inside a block, q/k/v slot of the fused projection)
TARGETS: dict[str, tuple[tuple[str, str], int | None]] = {
    "q": (("attn", "qkv"), 0),
    "k": (("attn", "qkv"), 1),
    "v": (("attn", "qkv"), 2),
    "o": (("attn", "out"), None),
    "fc1": (("mlp", "fc1"), None),
    "fc2": (("mlp", "fc2"), None),
}
# names accepted for targets (PEFT / transformers module names) → ours
_ALIASES = {"query": "q", "q_proj": "q", "key": "k", "k_proj": "k", "value": "v", "v_proj": "v",
            "out": "o", "o_proj": "o", "out_proj": "o", "dense": "o", "up_proj": "fc1",
            "down_proj": "fc2"}


@dataclass(frozen=True)
class LoraConfig:
    """rank r, alpha (scale = alpha / r), dropout on the adapter input, target projections."""

    rank: int = 8
    alpha: float = 32.0
    dropout: float = 0.1
    targets: tuple[str, ...] = ("q", "v")

    def __post_init__(self):
        if self.rank < 1:
            raise UserError(f"LoRA rank must be >= 1, got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        object.__setattr__(self, "targets", normalize_targets(self.targets))

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def normalize_targets(targets: Sequence[str]) -> tuple[str, ...]:
    out = []
    for t in targets:
        name = _ALIASES.get(t, t)
        if name not in TARGETS:
            raise UserError(f"unknown LoRA target {t!r}; choose from {', '.join(TARGETS)} "
                             f"(or {', '.join(_ALIASES)})")
        if name not in out:
            out.append(name)
    if not out:
        raise UserError("LoRA needs at least one target projection")
    return tuple(sorted(out, key=list(TARGETS).index))


def target_dims(spec: ModelSpec, target: str) -> tuple[int, int]:
    d, inner, m = spec.hidden_size, spec.num_heads * spec.head_dim, spec.mlp_dim
    return {"q": (d, inner), "k": (d, inner), "v": (d, inner), "o": (inner, d),
            "fc1": (d, m), "fc2": (m, d)}[target]


def init_lora(spec: ModelSpec, config: LoraConfig, key: jax.Array) -> dict:
    """Fresh adapters (B = 0: the adapted model equals the base model)."""
    n, r = spec.num_layers, config.rank
    out = {}
    for t, k in zip(config.targets, jax.random.split(key, len(config.targets)), strict=True):
        d_in, d_out = target_dims(spec, t)
        bound = 1.0 / np.sqrt(d_in)
        out[t] = {"a": jax.random.uniform(k, (n, d_in, r), jnp.float32, -bound, bound),
                  "b": jnp.zeros((n, r, d_out), jnp.float32)}
    return out


def num_adapter_params(adapters: dict) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(adapters)))


def inject(params: dict, adapters: dict) -> dict:
    """Backbone params with each adapter placed next to the kernel it adapts (`lora_<t>_a/b`,
    plus `lora_layer`: the layer index, for per-layer dropout keys)."""
    blocks = jax.tree.map(lambda x: x, params["blocks"])  # fresh dict structure
    for t, ab in adapters.items():
        (part, mod), _ = TARGETS[t]
        n = ab["a"].shape[0]
        node = dict(blocks[part][mod])
        node[f"lora_{t}_a"] = ab["a"]
        node[f"lora_{t}_b"] = ab["b"]
        node["lora_layer"] = jnp.arange(n, dtype=jnp.int32)
        blocks[part] = {**blocks[part], mod: node}
    return {**params, "blocks": blocks}


def interceptor(config: LoraConfig, key: jax.Array | None):
    """Flax interceptor adding scale·dropout(x)·A·B to every projection that carries adapters.

    key: dropout randomness for this example (None = no dropout, evaluation)."""
    rate = config.dropout if key is not None else 0.0

    def intercept(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name != "__call__" or not module.has_variable("params", "lora_layer"):
            return next_fun(*args, **kwargs)
        names = module.variables["params"]
        out = next_fun(*args, **kwargs)
        x = args[0]
        x2 = x.reshape(x.shape[0], -1) if x.ndim > 2 else x  # attention out: (T, heads, hd)
        layer = module.get_variable("params", "lora_layer")
        for i, t in enumerate(TARGETS):
            if f"lora_{t}_a" not in names:
                continue
            a = module.get_variable("params", f"lora_{t}_a").astype(x.dtype)
            b = module.get_variable("params", f"lora_{t}_b").astype(x.dtype)
            h = x2
            if rate > 0.0:
                k = jax.random.fold_in(jax.random.fold_in(key, layer), i)
                keep = jax.random.bernoulli(k, 1.0 - rate, h.shape)
                h = jnp.where(keep, h / (1.0 - rate), 0.0).astype(x.dtype)
            delta = (h @ a @ b) * jnp.asarray(config.scale, x.dtype)
            slot = TARGETS[t][1]
            if slot is None:
                out = out + delta.reshape(out.shape)
            else:
                out = out.at[:, slot].add(delta.reshape(out[:, slot].shape))
        return out

    return intercept


def adapted(config: LoraConfig | None, key: jax.Array | None = None):
    """Context manager under which `encode` applies injected adapters (no-op for None)."""
    if config is None:
        return contextlib.nullcontext()
    return nn.intercept_methods(interceptor(config, key))


def delta_kernels(spec: ModelSpec, adapters: dict, config: LoraConfig) -> dict:
    """{target: scale·A·B reshaped to the adapted kernel's layout (stacked over layers)}."""
    h, dh = spec.num_heads, spec.head_dim
    out = {}
    for t, ab in adapters.items():
        w = config.scale * jnp.einsum("lir,lro->lio", ab["a"], ab["b"],
                                      precision=jax.lax.Precision.HIGHEST)
        n, d_in, _ = w.shape
        if t in ("q", "k", "v"):
            w = w.reshape(n, d_in, h, dh)
        elif t == "o":
            w = w.reshape(n, h, dh, -1)
        out[t] = w
    return out


def merge(spec: ModelSpec, params: dict, adapters: dict, config: LoraConfig) -> dict:
    """Base params with W + (alpha/r)·A·B folded in: a plain backbone with no adapters."""
    blocks = jax.tree.map(lambda x: x, params["blocks"])
    for t, dw in delta_kernels(spec, adapters, config).items():
        (part, mod), slot = TARGETS[t]
        kernel = blocks[part][mod]["kernel"]
        kernel = kernel + dw if slot is None else kernel.at[:, :, slot].add(dw)
        blocks[part] = {**blocks[part], mod: {**blocks[part][mod], "kernel": kernel}}
    return {**params, "blocks": blocks}
