"""Gradient attributions: Grad-CAM on patch tokens, attention × gradient relevance (Chefer et
al. 2021), vanilla gradient saliency and SmoothGrad on pixels.

Every method differentiates one scalar per image, the *target*:
- with a linear `head` ({"kernel": (D, C), "bias": (C,) optional}) on the image embedding:
  the logit of `class_index` (an int or one per image), or of the predicted (argmax) class
  when `class_index` is None;
- without a head (the class-agnostic default): the L2 norm of the image embedding, the
  direction in which the representation grows (`target_score`);
- or any `target(out) -> scalar` on the per-image encoder outputs (a dict with
  "last_hidden_state", "pooled", ...; static, so pass the same function object to reuse
  the compiled code).
The image embedding is the model's pooled output (DINOv2/DINOv3: CLS after the final norm,
CLIP: post-normed CLS, SigLIP: MAP head); models without a pooler (MAE) use the normed CLS
token, and a layout without CLS and pooler would use the token mean.

Gradients come from `jax.value_and_grad` through the encoder's gradient taps (zero deltas
added to one hidden state or to every layer's attention probabilities, so the forward is
unchanged), per image, vmapped over the batch and jitted once per (spec, shape, options).
Token maps come back on the patch grid (B, grid_h, grid_w) with the prefix tokens (CLS,
registers) stripped via the layout; pixel maps as (B, H, W), reduced over channels by
max |·|.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp

from ssl_jax.attention.maps import tokens_to_grid
from ssl_jax.models.collectors import FullAttention, HiddenStates, ProbabilityTap, StateTap
from ssl_jax.models.encoder import encode
from ssl_jax.models.model import Model, _check_pixels
from ssl_jax.models.spec import ModelSpec

Head = Mapping[str, jax.Array]
Target = Callable[[dict], jax.Array]
HI = jax.lax.Precision.HIGHEST


# ---- the differentiated scalar ----------------------------------------------------------------

def embedding(spec: ModelSpec, out: Mapping[str, jax.Array]) -> jax.Array:
    """The per-image embedding (D,) that targets are defined on (see the module docstring)."""
    if out.get("pooled") is not None:
        return out["pooled"]
    last = out["last_hidden_state"]
    return last[0] if spec.has_cls else jnp.mean(last, axis=0)


def target_score(
    spec: ModelSpec,
    out: Mapping[str, jax.Array],
    head: Head | None = None,
    class_index: jax.Array | int | None = None,
) -> jax.Array:
    """The scalar a gradient method explains, for one image's encoder outputs `out`.

    head None: ‖embedding‖₂ (class-agnostic). head given: logit[class_index] of
    embedding @ kernel + bias; class_index None picks the argmax logit.
    """
    emb = embedding(spec, out).astype(jnp.float32)
    if head is None:
        if class_index is not None:
            raise ValueError("class_index needs a head (a linear classifier on the embedding)")
        return jnp.sqrt(jnp.sum(emb * emb))
    logits = jnp.matmul(emb, head["kernel"].astype(jnp.float32), precision=HI)
    if head.get("bias") is not None:
        logits = logits + head["bias"].astype(jnp.float32)
    idx = jnp.argmax(logits) if class_index is None else class_index
    return logits[idx]


def _check_head(spec: ModelSpec, head: Head | None, target: Target | None) -> Head | None:
    if head is None:
        return None
    if target is not None:
        raise ValueError("pass either head= (with class_index) or target=, not both")
    if "kernel" not in head:
        raise ValueError(f"head must be a dict with 'kernel' (D, C) and optional 'bias' (C,), "
                         f"got keys {sorted(head)}")
    k = jnp.asarray(head["kernel"], jnp.float32)
    if k.ndim != 2 or k.shape[0] != spec.hidden_size:
        raise ValueError(f"head kernel must be ({spec.hidden_size}, num_classes) for "
                         f"{spec.family}, got shape {tuple(k.shape)}")
    out = {"kernel": k}
    if head.get("bias") is not None:
        b = jnp.asarray(head["bias"], jnp.float32)
        if b.shape != (k.shape[1],):
            raise ValueError(f"head bias must be ({k.shape[1]},), got shape {tuple(b.shape)}")
        out["bias"] = b
    return out


def _class_indices(class_index, batch: int, head) -> jax.Array | None:
    if class_index is None:
        return None
    if head is None:
        raise ValueError("class_index needs a head (a linear classifier on the embedding)")
    c = jnp.asarray(class_index, jnp.int32)
    if c.ndim == 0:
        c = jnp.broadcast_to(c, (batch,))
    if c.shape != (batch,):
        raise ValueError(f"class_index must be an int or one per image ({batch},), got shape "
                         f"{tuple(c.shape)}")
    n = head["kernel"].shape[1]
    try:
        bad = int(c.min()) < 0 or int(c.max()) >= n
    except jax.errors.ConcretizationTypeError:  # traced inside a user's jit: not checkable
        bad = False
    if bad:
        raise ValueError(f"class_index out of range for a head with {n} classes")
    return c


def _score(spec, out, head, class_index, target):
    if target is not None:
        return jnp.asarray(target(out), jnp.float32).reshape(())
    return target_score(spec, out, head, class_index)


def _prepare(model: Model, pixels, head, class_index, target):
    if not isinstance(model, Model):
        raise TypeError(f"expected an ssl_jax.Model, got {type(model).__name__}")
    spec = model.spec
    pixels = _check_pixels(spec, pixels)
    head = _check_head(spec, head, target)
    return spec, pixels, head, _class_indices(class_index, pixels.shape[0], head)


def _layer_index(spec: ModelSpec, layer: int, what: str) -> int:
    n = spec.num_layers
    if not -n <= layer < n:
        raise ValueError(f"{what}: layer {layer} out of range for a {n}-layer model")
    return layer % n


# ---- Grad-CAM on patch tokens -----------------------------------------------------------------

@functools.partial(jax.jit, static_argnames=("spec", "dtype", "state", "relu", "target"))
def _grad_cam(params, head, pixels, class_index, *, spec, dtype, state, relu, target):
    def one(x, c):
        layout = spec.layout(x.shape[0], x.shape[1])
        zeros = jnp.zeros((layout.num_tokens, spec.hidden_size), jnp.float32)

        def f(delta):
            out = encode(spec, params, x, (StateTap(state, delta), HiddenStates()), dtype=dtype)
            return _score(spec, out, head, c, target), out["hidden_states"][state]

        (_, acts), grads = jax.value_and_grad(f, has_aux=True)(zeros)
        acts = acts.astype(jnp.float32)[layout.num_prefix:]
        grads = grads[layout.num_prefix:]
        weights = jnp.mean(grads, axis=0)  # (D,): gradient averaged over the patches
        cam = jnp.matmul(acts, weights, precision=HI)
        cam = jnp.maximum(cam, 0.0) if relu else cam
        return cam.reshape(layout.grid_h, layout.grid_w)

    return jax.vmap(one)(pixels, class_index)


def grad_cam(
    model: Model,
    pixels,
    *,
    layer: int = -2,
    head: Head | None = None,
    class_index=None,
    target: Target | None = None,
    relu: bool = True,
) -> jax.Array:
    """Grad-CAM (Selvaraju et al. 2017) on the patch tokens of one layer: (B, grid_h, grid_w).

    A = the residual stream after model layer `layer` (patch tokens only, (N, D)),
    G = d target / dA; w_d = mean over patches of G[:, d]; cam = ReLU(A @ w) (no ReLU with
    relu=False). The default layer -2 is the input of the last layer: in CLS-pooled models
    (and MAE) the target depends on the last layer's output only through its CLS token, so
    patch gradients there are exactly zero (the usual ViT choice, the last block's norm1
    input, is the same tokens before that LayerNorm).
    """
    spec, pixels, head, cidx = _prepare(model, pixels, head, class_index, target)
    state = _layer_index(spec, layer, "grad_cam") + 1
    return _grad_cam(model.params, head, pixels, cidx, spec=spec, dtype=model.dtype,
                     state=state, relu=relu, target=target)


# ---- attention × gradient (Chefer et al. 2021) -----------------------------------------------

def relevance_from(attentions: jax.Array, gradients: jax.Array, start_layer: int = 0):
    """Chefer et al. (2021) self-attention relevance from per-layer probabilities and their
    gradients, both (..., L, heads, T, T): R = I; for l ≥ start_layer,
    R ← R + mean_heads(max(∇A_l ⊙ A_l, 0)) @ R. Returns R (..., T, T)."""
    cams = jnp.mean(jnp.maximum(gradients * attentions, 0.0), axis=-3)[..., start_layer:, :, :]
    cams = jnp.moveaxis(cams, -3, 0)
    t = attentions.shape[-1]
    init = jnp.broadcast_to(jnp.eye(t, dtype=jnp.float32), cams.shape[1:])

    def body(r, cam):
        return r + jnp.matmul(cam, r, precision=HI), None

    r, _ = jax.lax.scan(body, init, cams)
    return r


@functools.partial(jax.jit, static_argnames=("spec", "dtype", "start_layer", "target"))
def _attention_gradient(params, head, pixels, class_index, *, spec, dtype, start_layer, target):
    n = spec.num_layers

    def one(x, c):
        layout = spec.layout(x.shape[0], x.shape[1])
        t = layout.num_tokens
        zeros = jnp.zeros((n, spec.num_heads, t, t), jnp.float32)

        def f(delta):
            out = encode(spec, params, x, (ProbabilityTap(delta), FullAttention()), dtype=dtype)
            return _score(spec, out, head, c, target), out["attentions"]

        (_, att), grads = jax.value_and_grad(f, has_aux=True)(zeros)
        r = relevance_from(att.astype(jnp.float32), grads, start_layer)
        row = r[0] if layout.has_cls else jnp.mean(r, axis=0)
        return tokens_to_grid(row, layout)

    return jax.vmap(one)(pixels, class_index)


def attention_gradient(
    model: Model,
    pixels,
    *,
    head: Head | None = None,
    class_index=None,
    target: Target | None = None,
    start_layer: int = 0,
) -> jax.Array:
    """Attention × gradient relevance (Chefer et al. 2021, generic attention-model
    explainability) on the patch grid: (B, grid_h, grid_w).

    R = I; for each layer l ≥ start_layer: R ← R + mean_heads(max(∇A_l ⊙ A_l, 0)) @ R, with
    ∇A_l = d target / dA_l (A_l the post-softmax probabilities). The map is R's CLS row over
    the patches. Layouts without CLS (SigLIP, pooled by its MAP head over all tokens) take
    the mean of R's rows instead: the relevance each patch gives the average token.
    Holds L×heads×T×T probabilities and gradients per image (the method needs them all).
    """
    spec, pixels, head, cidx = _prepare(model, pixels, head, class_index, target)
    start = _layer_index(spec, start_layer, "attention_gradient")
    return _attention_gradient(model.params, head, pixels, cidx, spec=spec, dtype=model.dtype,
                               start_layer=start, target=target)


# ---- pixel saliency -------------------------------------------------------------------------

def _pixel_grad_fn(params, head, spec, dtype, target):
    def one(x, c):
        def f(xx):
            return _score(spec, encode(spec, params, xx, dtype=dtype), head, c, target)

        return jax.grad(f)(x)

    return jax.vmap(one)


@functools.partial(jax.jit, static_argnames=("spec", "dtype", "target"))
def _saliency(params, head, pixels, class_index, *, spec, dtype, target):
    g = _pixel_grad_fn(params, head, spec, dtype, target)(pixels, class_index)
    return jnp.max(jnp.abs(g), axis=-1)


def gradient_saliency(
    model: Model,
    pixels,
    *,
    head: Head | None = None,
    class_index=None,
    target: Target | None = None,
) -> jax.Array:
    """Vanilla gradient saliency (Simonyan et al. 2014): max over channels of
    |d target / d pixels|, (B, H, W), on the preprocessed (normalised) pixels."""
    spec, pixels, head, cidx = _prepare(model, pixels, head, class_index, target)
    return _saliency(model.params, head, pixels, cidx, spec=spec, dtype=model.dtype,
                     target=target)


@functools.partial(jax.jit, static_argnames=("spec", "dtype", "target", "num_samples"))
def _smoothgrad(params, head, pixels, class_index, key, noise_level, *, spec, dtype, target,
                num_samples):
    grad_fn = _pixel_grad_fn(params, head, spec, dtype, target)
    span = jnp.max(pixels, axis=(1, 2, 3)) - jnp.min(pixels, axis=(1, 2, 3))
    sigma = (noise_level * span)[:, None, None, None]

    def body(i, acc):
        noise = jax.random.normal(jax.random.fold_in(key, i), pixels.shape, jnp.float32)
        g = grad_fn(pixels + sigma * noise, class_index)
        return acc + jnp.max(jnp.abs(g), axis=-1)

    total = jax.lax.fori_loop(0, num_samples, body, jnp.zeros(pixels.shape[:3], jnp.float32))
    return total / num_samples


def smoothgrad(
    model: Model,
    pixels,
    key: jax.Array,
    *,
    num_samples: int = 50,
    noise_level: float = 0.15,
    head: Head | None = None,
    class_index=None,
    target: Target | None = None,
) -> jax.Array:
    """SmoothGrad (Smilkov et al. 2017): the gradient-saliency map averaged over
    `num_samples` noisy copies x + N(0, σ²), σ = noise_level × (max(x) − min(x)) per image
    (the paper's 10-20 % of the pixel range). (B, H, W).

    Sample i's noise for the whole batch is drawn from `fold_in(key, i)`; the samples run
    one after another (one batched forward + backward in memory at a time).
    """
    spec, pixels, head, cidx = _prepare(model, pixels, head, class_index, target)
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if noise_level < 0:
        raise ValueError(f"noise_level must be >= 0, got {noise_level}")
    return _smoothgrad(model.params, head, pixels, cidx, key, jnp.float32(noise_level),
                       spec=spec, dtype=model.dtype, target=target,
                       num_samples=int(num_samples))
