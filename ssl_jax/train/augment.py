"""Training augmentation in JAX, driven by PRNG keys (one key per image, vmapped).

Mirrors the study's torchvision pipeline on [0, 1] RGB before normalisation:
RandomResizedCrop(scale=(0.8, 1.0), ratio=(3/4, 4/3), bilinear) → horizontal flip (p = 0.5)
→ brightness and contrast jitter (factors in [1 − 0.2, 1 + 0.2], applied in random order as
ColorJitter does). Differences, by design: the crop box is drawn once and clipped to the
image instead of torchvision's up-to-10 rejection tries, and the crop is resampled with
separable bilinear weight matrices (half-pixel centres, edge clamp: torch's
align_corners=False). No antialiasing is needed: images are stored at the output size and a
crop is never larger than the image, so the crop is only ever enlarged.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp


@dataclass(frozen=True)
class AugmentConfig:
    scale: tuple[float, float] = (0.8, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2


def _gray_mean(img: jax.Array) -> jax.Array:
    # torchvision rgb_to_grayscale weights, then the mean over the image
    return jnp.mean(img[..., 0] * 0.2989 + img[..., 1] * 0.587 + img[..., 2] * 0.114)


def bilinear_weights(start: jax.Array, length: jax.Array, out: int, size: int) -> jax.Array:
    """(out, size) bilinear interpolation matrix sampling [start, start + length) of an axis
    of `size` pixels at `out` evenly spaced half-pixel centres."""
    centres = start + (jnp.arange(out, dtype=jnp.float32) + 0.5) * (length / out) - 0.5
    centres = jnp.clip(centres, 0.0, size - 1.0)
    return jnp.maximum(0.0, 1.0 - jnp.abs(centres[:, None] - jnp.arange(size, dtype=jnp.float32)))


def augment_one(key: jax.Array, img: jax.Array, out_hw: tuple[int, int],
                cfg: AugmentConfig = AugmentConfig()) -> jax.Array:
    """One image (H, W, 3) in [0, 1] → augmented (out_h, out_w, 3) in [0, 1]."""
    h, w = img.shape[0], img.shape[1]
    # one draw of 8 uniforms per image (one threefry call: cheap to compile)
    u = jax.random.uniform(key, (8,), jnp.float32)
    area = h * w * (cfg.scale[0] + u[0] * (cfg.scale[1] - cfg.scale[0]))
    lo, hi = jnp.log(cfg.ratio[0]), jnp.log(cfg.ratio[1])
    r = jnp.exp(lo + u[1] * (hi - lo))
    cw = jnp.clip(jnp.sqrt(area * r), 1.0, w)
    ch = jnp.clip(jnp.sqrt(area / r), 1.0, h)
    top = u[2] * (h - ch)
    left = u[3] * (w - cw)
    oh, ow = out_hw
    wy = bilinear_weights(top, ch, oh, h)
    wx = bilinear_weights(left, cw, ow, w)
    out = jnp.einsum("oh,hwc,pw->opc", wy, img, wx, precision=jax.lax.Precision.HIGHEST)
    out = jnp.where(u[4] < cfg.flip, out[:, ::-1], out)
    b = 1 - cfg.brightness + 2 * cfg.brightness * u[5]
    c = 1 - cfg.contrast + 2 * cfg.contrast * u[6]

    def brightness(x):
        return jnp.clip(x * b, 0.0, 1.0)

    def contrast(x):
        return jnp.clip(c * x + (1 - c) * _gray_mean(x), 0.0, 1.0)

    return jnp.where(u[7] < 0.5, contrast(brightness(out)), brightness(contrast(out)))


def normalize(img01: jax.Array, mean, std) -> jax.Array:
    return (img01 - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def prepare_batch(images_u8: jax.Array, key: jax.Array | None, out_hw: tuple[int, int],
                  mean, std, cfg: AugmentConfig | None = AugmentConfig()) -> jax.Array:
    """uint8 (B, H, W, 3) → normalised float32 model pixels; augmented when key and cfg are
    given (one subkey per image), else resized only if the size differs."""
    x = images_u8.astype(jnp.float32) * jnp.float32(1 / 255)
    if key is not None and cfg is not None:
        keys = jax.random.split(key, x.shape[0])
        x = jax.vmap(lambda k, im: augment_one(k, im, out_hw, cfg))(keys, x)
    elif x.shape[1:3] != tuple(out_hw):
        x = jax.image.resize(x, (x.shape[0], *out_hw, x.shape[3]), "linear")
    return normalize(x, mean, std)
