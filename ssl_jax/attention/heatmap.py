"""Heatmap utilities: grid → pixel upsampling, min-max normalisation, original-image frame.

`upsample` is torch `interpolate(mode="bilinear", align_corners=False)` (SPEC R2.7) through
the exact resampling matrices of `ssl_jax.core.resample`; everything is jit-able with sizes (and
the transform) static.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.core.resample import resize_axes
from ssl_jax.models.preprocess import Transform

NORM_EPS = 1e-8


def upsample(maps: jax.Array, size: tuple[int, int] = (224, 224)) -> jax.Array:
    """(..., h, w) maps → (..., size[0], size[1]), bilinear, align_corners=False."""
    maps = jnp.asarray(maps, jnp.float32)
    if maps.ndim < 2:
        raise ValueError(f"upsample expects maps (..., h, w), got shape {tuple(maps.shape)}")
    return resize_axes(maps, tuple(size), axes=(-2, -1), method="bilinear")


def minmax_normalize(maps: jax.Array, eps: float = NORM_EPS) -> jax.Array:
    """Per-map (last two axes) (x - min) / (max - min + eps), in [0, 1)."""
    maps = jnp.asarray(maps, jnp.float32)
    lo = jnp.min(maps, axis=(-2, -1), keepdims=True)
    hi = jnp.max(maps, axis=(-2, -1), keepdims=True)
    return (maps - lo) / (hi - lo + eps)


def to_heatmap(
    maps: jax.Array, size: tuple[int, int] = (224, 224), *, normalize: bool = True
) -> jax.Array:
    """The study's `attention_to_heatmap`: upsample to `size`, then per-map min-max."""
    up = upsample(maps, size)
    return minmax_normalize(up) if normalize else up


@functools.lru_cache(maxsize=256)
def _frame_matrix(n_map: int, n_input: int, n_original: int, scale: float, offset: float):
    """(n_original, n_map) bilinear weights sampling a map laid over the input frame at the
    centres of original-image pixels, and a mask of pixels that fall inside the input."""
    centre = (np.arange(n_original, dtype=np.float64) + 0.5) * scale - offset  # input pixels
    inside = (centre >= 0.0) & (centre < n_input)
    # half-pixel map coordinate, clamped at the edges as torch does for align_corners=False
    u = np.clip(centre * n_map / n_input - 0.5, 0.0, n_map - 1)
    i0 = np.floor(u).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_map - 1)
    w1 = u - i0
    m = np.zeros((n_original, n_map), np.float64)
    rows = np.arange(n_original)
    np.add.at(m, (rows, i0), 1.0 - w1)
    np.add.at(m, (rows, i1), w1)
    m[~inside] = 0.0
    return m.astype(np.float32), inside


def to_original_frame(
    maps: jax.Array, transform: Transform, *, fill_value: float = 0.0
) -> jax.Array:
    """Maps over the model input (..., h, w) (a patch grid or an upsampled map) → the frame
    of the original image, (..., original_height, original_width).

    Each original pixel centre is mapped through `transform` into the input frame and the
    map is sampled there bilinearly (half-pixel centres, edge clamp). Pixels cut away by a
    centre crop get `fill_value`. With a squash transform this equals
    `upsample(maps, transform.original_size)`. Per image: images differ in size.
    """
    maps = jnp.asarray(maps, jnp.float32)
    if maps.ndim < 2:
        raise ValueError(f"to_original_frame expects maps (..., h, w), got {tuple(maps.shape)}")
    (in_h, in_w), (orig_h, orig_w) = transform.input_size, transform.original_size
    mh, inside_h = _frame_matrix(maps.shape[-2], in_h, orig_h, transform.scale_y,
                                 transform.offset_y)
    mw, inside_w = _frame_matrix(maps.shape[-1], in_w, orig_w, transform.scale_x,
                                 transform.offset_x)
    hi = jax.lax.Precision.HIGHEST
    out = jnp.einsum("ih,...hw,jw->...ij", jnp.asarray(mh), maps, jnp.asarray(mw), precision=hi)
    inside = jnp.asarray(inside_h[:, None] & inside_w[None, :])
    return jnp.where(inside, out, jnp.float32(fill_value))
