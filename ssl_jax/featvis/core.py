"""Feature visualisation by activation maximisation, with jax.grad through `encode`.

The image is parameterised in Fourier space (real/imag coefficients of an rFFT, scaled by
1/frequency^decay so every frequency band learns at a similar rate) in a decorrelated colour
basis (the square root of ImageNet's RGB colour correlation), squashed to [0, 1] with a
sigmoid and then normalised with the model's own mean/std. Each step draws a random
transformation (jitter by translation, scale, rotation: one bilinear affine resampling) so
the optimum is robust rather than adversarial noise, and penalises total variation and the L2
norm of the RGB image. The whole optimisation is one jitted `lax.scan`: for a given key the
result is bit-for-bit repeatable.

Objectives (`Objective`): a residual-stream unit (layer, token, channel), a channel averaged
over patch tokens, an SAE feature averaged over patch tokens, a pooled-embedding unit, or an
attention head's CLS→patch attention mass. `sign=-1` minimises (negative visualisation).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ssl_jax.core.errors import UserError
from ssl_jax.models.collectors import FullAttention, HiddenStates
from ssl_jax.models.encoder import encode

# Square root of the RGB colour correlation of ImageNet images (a property of natural images,
# the usual decorrelated colour basis of feature visualisation); columns scaled to max norm 1.
_COLOR_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]],
                       np.float32)
COLOR_BASIS = _COLOR_SQRT / np.max(np.linalg.norm(_COLOR_SQRT, axis=0))


# ---- image parameterisation -----------------------------------------------------------------


def _freq_scale(size: tuple[int, int], decay: float) -> np.ndarray:
    h, w = size
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fy * fy + fx * fx)
    return (1.0 / np.maximum(f, 1.0 / max(h, w)) ** decay).astype(np.float32)


def init_image(key, size: tuple[int, int], sd: float = 0.01) -> jax.Array:
    """Random Fourier coefficients (2, 3, h, w//2+1): the optimised parameters."""
    h, w = size
    return sd * jax.random.normal(key, (2, 3, h, w // 2 + 1), jnp.float32)


def to_rgb(spectrum: jax.Array, size: tuple[int, int], decay: float = 1.0) -> jax.Array:
    """Fourier coefficients → RGB image (h, w, 3) in (0, 1)."""
    scale = jnp.asarray(_freq_scale(size, decay))
    coeffs = (spectrum[0] + 1j * spectrum[1]) * scale
    img = jnp.fft.irfft2(coeffs, s=size, axes=(-2, -1)).transpose(1, 2, 0)  # (h, w, 3)
    img = img * np.sqrt(size[0] * size[1]) / 4.0  # orthonormal-like scale, as usual
    img = img @ jnp.asarray(COLOR_BASIS).T
    return jax.nn.sigmoid(img)


# ---- transforms ------------------------------------------------------------------------------


def random_affine(key, img: jax.Array, *, jitter: int = 4, scales=(0.9, 1.1),
                  degrees: float = 10.0) -> jax.Array:
    """One random translation (± jitter px), scale and rotation about the centre, bilinear,
    edges repeated. img (h, w, c)."""
    h, w, _ = img.shape
    kt, ks, kr = jax.random.split(key, 3)
    t = jax.random.uniform(kt, (2,), minval=-jitter, maxval=jitter) if jitter else jnp.zeros(2)
    s = jax.random.uniform(ks, (), minval=scales[0], maxval=scales[1])
    a = jnp.deg2rad(jax.random.uniform(kr, (), minval=-degrees, maxval=degrees))
    yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                          indexing="ij")
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    dy, dx = yy - cy - t[0], xx - cx - t[1]
    # output pixel ← input at the inverse transform
    sy = (jnp.cos(a) * dy + jnp.sin(a) * dx) / s + cy
    sx = (-jnp.sin(a) * dy + jnp.cos(a) * dx) / s + cx
    sample = functools.partial(jax.scipy.ndimage.map_coordinates, coordinates=[sy, sx],
                               order=1, mode="nearest")
    return jax.vmap(sample, in_axes=-1, out_axes=-1)(img)


def total_variation(img: jax.Array) -> jax.Array:
    return jnp.mean(jnp.abs(img[1:] - img[:-1])) + jnp.mean(jnp.abs(img[:, 1:] - img[:, :-1]))


# ---- objectives ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Objective:
    """What to maximise. kind: "channel" (mean over patch tokens of channel `index` of hidden
    state `layer`), "unit" (token `token`, channel `index`), "sae" (mean over patch tokens of
    SAE feature `index` before its ReLU; `sae` holds the SAE), "pooled" (pooled embedding unit `index`),
    "head" (head `index`'s attention from the CLS token (SigLIP: mean over queries) to the
    patch tokens at block `layer`, summed)."""

    kind: str
    index: int
    layer: int = -1
    token: int = 0
    sae: Any = field(default=None, compare=False, hash=False)

    def __call__(self, spec, params, pixels) -> jax.Array:
        if self.kind == "head":
            out = encode(spec, params, pixels, (FullAttention((self.layer % spec.num_layers,)),))
            lay = spec.layout(pixels.shape[0], pixels.shape[1])
            probs = out["attentions"][0, self.index]  # (T, T)
            rows = probs[0] if lay.has_cls else probs.mean(0)
            return jnp.sum(rows[lay.num_prefix:])
        out = encode(spec, params, pixels, () if self.kind == "pooled" else (HiddenStates(),))
        if self.kind == "pooled":
            return out["pooled"][self.index]
        h = out["hidden_states"][self.layer]  # (T, D)
        lay = spec.layout(pixels.shape[0], pixels.shape[1])
        if self.kind == "unit":
            return h[self.token, self.index]
        patches = h[lay.num_prefix:]
        if self.kind == "channel":
            return jnp.mean(patches[:, self.index])
        if self.kind == "sae":
            # the pre-ReLU value: a feature that is off on the start image (most are, at a
            # target L0 of tens among thousands) still has a gradient; where it fires the
            # objective equals the activation
            return jnp.mean(self.sae.pre_activation(patches)[:, self.index])
        raise UserError(f"unknown objective kind {self.kind!r}")


# ---- optimisation ----------------------------------------------------------------------------


@dataclass(frozen=True)
class VisConfig:
    size: tuple[int, int] = (224, 224)
    steps: int = 256
    lr: float = 0.05
    decay: float = 1.0
    jitter: int = 8
    scales: tuple[float, float] = (0.9, 1.1)
    degrees: float = 10.0
    tv: float = 0.05
    l2: float = 0.01
    sign: float = 1.0
    init_sd: float = 0.01

    def _replace_sign(self) -> VisConfig:
        """The same settings with the sign normalised (the sign is a traced argument)."""
        return dataclasses.replace(self, sign=1.0)


@dataclass
class VisResult:
    image: np.ndarray        # (h, w, 3) in [0, 1]
    start: float             # objective at the random start (untransformed image)
    final: float             # objective at the result (untransformed image)
    history: np.ndarray      # (steps,) objective under the step's random transform

    @property
    def gain(self) -> float:
        """(final - start) · sign, in the objective's units."""
        return self.final - self.start


def _normalise(spec, rgb):
    p = spec.preprocessing
    return (rgb - jnp.asarray(p.mean, jnp.float32)) / jnp.asarray(p.std, jnp.float32)


def visualize(model, objective: Objective, key, config: VisConfig = VisConfig()) -> VisResult:
    """Maximise (sign=+1) or minimise (sign=-1) `objective` over an image. Deterministic
    for `key`."""
    spec, params, c = model.spec, model.params, config
    spec.layout(*c.size)  # the size must be a multiple of the patch size
    run = _compiled(spec, objective, c._replace_sign())
    spectrum, hist, start, final = run(params, key, jnp.float32(c.sign))
    rgb = to_rgb(spectrum, c.size, c.decay)
    return VisResult(np.asarray(rgb), float(start), float(final), np.asarray(hist))


@functools.lru_cache(maxsize=32)
def _compiled(spec, objective: Objective, c: VisConfig):
    opt = optax.adam(c.lr)

    def value(params, spectrum):
        return objective(spec, params, _normalise(spec, to_rgb(spectrum, c.size, c.decay)))

    def loss(spectrum, params, key, sign):
        rgb = to_rgb(spectrum, c.size, c.decay)
        moved = random_affine(key, rgb, jitter=c.jitter, scales=c.scales, degrees=c.degrees)
        v = objective(spec, params, _normalise(spec, moved))
        pen = c.tv * total_variation(rgb) + c.l2 * jnp.mean((rgb - 0.5) ** 2)
        return -sign * v + pen, v

    @jax.jit
    def run(params, key, sign):
        k_init, key = jax.random.split(key)
        spectrum = init_image(k_init, c.size, c.init_sd)
        def step(carry, k):
            s, st = carry
            (_, v), g = jax.value_and_grad(loss, has_aux=True)(s, params, k, sign)
            upd, st = opt.update(g, st, s)
            return (optax.apply_updates(s, upd), st), v

        start = value(params, spectrum)
        (s, _), hist = jax.lax.scan(step, (spectrum, opt.init(spectrum)),
                                    jax.random.split(key, c.steps))
        return s, hist, start, value(params, s)

    return run
