"""Baseline maps (SPEC R4.4): random, centre Gaussian, saliency prior, Sobel edges.

Random maps come from explicit keys (SPEC decision 6), not torch's global seed: image i of a
batch draws from ``fold_in(key, i)`` (`random_maps`) or, order-independently, from
``fold_in(key, md5(image_id) mod 2³¹)`` (`random_maps_for_ids`); trial t is the t-th of that
key's draws. The default is 100 trials per image; metrics of random maps are averaged over the
trials (`alignment_grid` on (I, T, H, W) maps, then a mean over T).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from ssl_jax.core.pixels import to_rgb

N_RANDOM_TRIALS = 100


def center_gaussian(height: int = 224, width: int = 224) -> np.ndarray:
    """sigma = max(H, W)/4 at ((H-1)/2, (W-1)/2), peak 1 (float32)."""
    sigma = max(height, width) / 4
    y = np.arange(height)[:, None] - (height - 1) / 2
    x = np.arange(width)[None, :] - (width - 1) / 2
    g = np.exp(-(x**2 + y**2) / (2 * sigma**2))
    return (g / g.max()).astype(np.float32)


def saliency_prior(height: int = 224, width: int = 224) -> np.ndarray:
    """Centre Gaussian (sigma max(H, W)/3) times the border fade min(dy, dx), / max, where
    d = min(i, size-1-i) / ((size-1)/2) clipped to [0, 1]."""
    sigma = max(height, width) / 3
    iy, ix = np.arange(height)[:, None], np.arange(width)[None, :]
    g = np.exp(-((ix - (width - 1) / 2) ** 2 + (iy - (height - 1) / 2) ** 2) / (2 * sigma**2))
    dy = np.clip(np.minimum(iy, height - 1 - iy) / ((height - 1) / 2), 0, 1)
    dx = np.clip(np.minimum(ix, width - 1 - ix) / ((width - 1) / 2), 0, 1)
    m = g * np.minimum(dy, dx)
    return (m / m.max()).astype(np.float32)


def random_maps(key: jax.Array, num_images: int, trials: int = N_RANDOM_TRIALS,
                height: int = 224, width: int = 224) -> jax.Array:
    """(images, trials, H, W) U[0, 1) maps; image i uses fold_in(key, i)."""
    if num_images < 0 or trials < 1:
        raise ValueError(f"need num_images ≥ 0 and trials ≥ 1, got {num_images}, {trials}")
    return _uniform_per_seed(key, jnp.arange(num_images, dtype=jnp.uint32), trials, height,
                             width)


@partial(jax.jit, static_argnames=("trials", "height", "width"))
def _uniform_per_seed(key, seeds, trials, height, width):
    keys = jax.vmap(lambda s: jax.random.fold_in(key, s))(seeds)
    return jax.vmap(lambda k: jax.random.uniform(k, (trials, height, width)))(keys)


def image_seed(image_id: str) -> int:
    """Stable per-image integer (md5 of the id, mod 2³¹) — the original hashed ids the same
    way (mod 1000) to seed torch."""
    return int(hashlib.md5(image_id.encode()).hexdigest(), 16) % (2**31)


def random_maps_for_ids(key: jax.Array, image_ids: Sequence[str],
                        trials: int = N_RANDOM_TRIALS, height: int = 224,
                        width: int = 224) -> jax.Array:
    """(len(ids), trials, H, W) maps; each image's draws depend only on key and its id."""
    if trials < 1:
        raise ValueError(f"need trials ≥ 1, got {trials}")
    seeds = jnp.asarray([image_seed(i) for i in image_ids], jnp.uint32)
    return _uniform_per_seed(key, seeds, trials, height, width)


def grey_resized(image, height: int = 224, width: int = 224) -> np.ndarray:
    """PIL ``convert("L")`` (ITU-R 601 luma) then PIL bicubic resize, / 255 → float32."""
    if isinstance(image, Image.Image):  # any mode (16-bit, palette, CMYK) by the one rule
        image = to_rgb(image)
    img = Image.fromarray(np.asarray(image))
    grey = img.convert("L").resize((width, height), Image.BICUBIC)
    return np.asarray(grey, np.float32) / 255.0


@jax.jit
def sobel_magnitude(grey) -> jax.Array:
    """(..., H, W) grey → Sobel magnitude / max (reflect pad 1, cross-correlation)."""
    g = jnp.asarray(grey, jnp.float32)
    pad = [(0, 0)] * (g.ndim - 2) + [(1, 1), (1, 1)]
    p = jnp.pad(g, pad, mode="reflect")
    def c(dy, dx):
        return p[..., 1 + dy:p.shape[-2] - 1 + dy, 1 + dx:p.shape[-1] - 1 + dx]
    gx = (c(-1, 1) + 2 * c(0, 1) + c(1, 1)) - (c(-1, -1) + 2 * c(0, -1) + c(1, -1))
    gy = (c(1, -1) + 2 * c(1, 0) + c(1, 1)) - (c(-1, -1) + 2 * c(-1, 0) + c(-1, 1))
    mag = jnp.sqrt(gx**2 + gy**2)
    mx = jnp.max(mag, axis=(-2, -1), keepdims=True)
    return jnp.where(mx > 0, mag / jnp.where(mx > 0, mx, 1.0), mag)


def sobel_edges(image, height: int = 224, width: int = 224) -> np.ndarray:
    """Sobel-edge baseline of one image (PIL image or HWC/HW uint8 array): (H, W) float32."""
    return np.asarray(sobel_magnitude(grey_resized(image, height, width)))
