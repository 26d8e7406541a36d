"""Baseline maps (SPEC R4.4): random, centre Gaussian, saliency prior, Sobel edges."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image


def center_gaussian(height: int = 224, width: int = 224) -> np.ndarray:
    """sigma = max(H, W)/4 at ((H-1)/2, (W-1)/2), peak 1."""
    sigma = max(height, width) / 4
    y = np.arange(height)[:, None] - (height - 1) / 2
    x = np.arange(width)[None, :] - (width - 1) / 2
    g = np.exp(-(x**2 + y**2) / (2 * sigma**2))
    return (g / g.max()).astype(np.float32)


def saliency_prior(height: int = 224, width: int = 224) -> np.ndarray:
    """Centre Gaussian (sigma max(H, W)/3) times a border fade min(dy, dx), / max."""
    sigma = max(height, width) / 3
    iy, ix = np.arange(height)[:, None], np.arange(width)[None, :]
    g = np.exp(-((ix - (width - 1) / 2) ** 2 + (iy - (height - 1) / 2) ** 2) / (2 * sigma**2))
    dy = np.clip(np.minimum(iy, height - 1 - iy) / ((height - 1) / 2), 0, 1)
    dx = np.clip(np.minimum(ix, width - 1 - ix) / ((width - 1) / 2), 0, 1)
    m = g * np.minimum(dy, dx)
    return (m / m.max()).astype(np.float32)


def random_maps(key: jax.Array, num_images: int, trials: int, height: int = 224,
                width: int = 224) -> jax.Array:
    """(images, trials, H, W) uniform maps; image i uses fold_in(key, i) (seeded per image)."""
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(num_images))
    return jax.vmap(lambda k: jax.random.uniform(k, (trials, height, width)))(keys)


def sobel_edges(image, height: int = 224, width: int = 224) -> np.ndarray:
    """Sobel gradient magnitude of the grey image resized to (H, W) (bicubic), / max."""
    grey = np.asarray(Image.fromarray(np.asarray(image)).convert("L").resize(
        (width, height), Image.BICUBIC), np.float32) / 255.0
    p = np.pad(grey, 1, mode="reflect")
    gx = (p[:-2, 2:] + 2 * p[1:-1, 2:] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[1:-1, :-2]
                                                      + p[2:, :-2])
    gy = (p[2:, :-2] + 2 * p[2:, 1:-1] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[:-2, 1:-1]
                                                      + p[:-2, 2:])
    mag = np.sqrt(gx**2 + gy**2)
    return (mag / mag.max() if mag.max() > 0 else mag).astype(np.float32)
