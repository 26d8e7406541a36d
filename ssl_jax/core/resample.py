"""PyTorch-exact separable resampling as small dense matrices.

`torch.nn.functional.interpolate` has several variants that `jax.image.resize` cannot
reproduce (bicubic without antialias uses Keys a=-0.75 with clamped taps; bilinear without
antialias point-samples when downscaling). Every variant is separable, so each is one
(out, in) weight matrix per axis, built once in numpy for static sizes and applied with an
einsum inside jit. The matrices follow torch's index arithmetic for `align_corners=False`
with `size=` given (scale = in / out).
"""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

Method = Literal["bilinear", "bicubic"]


def _cubic_keys(x: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel."""
    x = np.abs(x)
    return np.where(
        x <= 1.0,
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0,
        np.where(x < 2.0, ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a, 0.0),
    )


def _plain_matrix(n_in: int, n_out: int, method: Method) -> np.ndarray:
    """torch's non-antialiased kernels (upsample_bilinear2d / upsample_bicubic2d)."""
    scale = np.float32(n_in / n_out)
    dst = np.arange(n_out, dtype=np.float32)
    src = scale * (dst + np.float32(0.5)) - np.float32(0.5)
    m = np.zeros((n_out, n_in), np.float64)
    rows = np.arange(n_out)
    if method == "bilinear":
        src = np.maximum(src, np.float32(0.0))  # torch clamps negative sources for linear modes
        i0 = src.astype(np.int64)
        i1 = np.minimum(i0 + 1, n_in - 1)
        w1 = (src - i0.astype(np.float32)).astype(np.float64)
        np.add.at(m, (rows, i0), 1.0 - w1)
        np.add.at(m, (rows, i1), w1)
        return m
    i0 = np.floor(src).astype(np.int64)
    t = (src - i0.astype(np.float32)).astype(np.float32)
    a = np.float32(-0.75)
    # same four weights, same float32 arithmetic as aten's cubic_convolution1/2
    def conv1(x):
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def conv2(x):
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    one = np.float32(1.0)
    weights = [conv2(t + one), conv1(t), conv1(one - t), conv2(np.float32(2.0) - t)]
    for k, w in enumerate(weights):
        idx = np.clip(i0 - 1 + k, 0, n_in - 1)
        np.add.at(m, (rows, idx), w.astype(np.float64))
    return m


def _antialias_matrix(n_in: int, n_out: int, method: Method) -> np.ndarray:
    """torch's antialiased kernels (PIL-style: support scaled by the downscale factor).

    The weights follow aten's `_compute_weights_aa` with its float32/float64 mix exactly:
    with float32 centres an output pixel's taps move by ~1e-6 px, which shows as 1e-5 on
    high-contrast images if done in float64 instead.
    """
    f32 = np.float32
    scale = f32(f32(n_in) / f32(n_out))
    interp_size = 4 if method == "bicubic" else 2
    support = f32(interp_size * 0.5 * float(scale)) if scale >= 1.0 else f32(interp_size * 0.5)
    invscale = f32(1.0 / float(scale)) if scale >= 1.0 else f32(1.0)

    def filt(x: np.ndarray) -> np.ndarray:
        x = np.abs(x.astype(np.float32)).astype(np.float64)
        if method == "bilinear":
            return np.where(x < 1.0, 1.0 - x, 0.0).astype(np.float32)
        a = -0.5
        return np.where(x < 1.0, ((a + 2.0) * x - (a + 3.0)) * x * x + 1,
                        np.where(x < 2.0, (((x - 5) * x + 8) * x - 4) * a, 0.0)).astype(np.float32)

    m = np.zeros((n_out, n_in), np.float32)
    for i in range(n_out):
        center = f32(float(scale) * (i + 0.5))
        xmin = max(int(float(f32(center - support)) + 0.5), 0)
        xmax = min(int(float(f32(center + support)) + 0.5), n_in)
        j = np.arange(xmin, xmax)
        x = ((j.astype(np.float32) - center).astype(np.float64) + 0.5) * float(invscale)
        w = filt(x)
        total = np.float32(0.0)
        for v in w:  # sequential float32 sum, as aten accumulates
            total = np.float32(total + v)
        m[i, xmin:xmax] = w / total if total != 0 else w
    return m


@functools.lru_cache(maxsize=256)
def resize_matrix(n_in: int, n_out: int, method: Method, antialias: bool) -> np.ndarray:
    """(n_out, n_in) float32 matrix M with `out = M @ in` along one axis."""
    if method not in ("bilinear", "bicubic"):
        raise ValueError(f"unsupported resize method {method!r}")
    if n_in <= 0 or n_out <= 0:
        raise ValueError(f"resize sizes must be positive, got {n_in} -> {n_out}")
    # NB torch's antialiased bicubic uses a=-0.5 even when upsampling (plain bicubic: -0.75).
    if antialias:
        m = _antialias_matrix(n_in, n_out, method)
    else:
        m = _plain_matrix(n_in, n_out, method)
    m = m.astype(np.float32)
    m.setflags(write=False)
    return m


def resize_axes(
    x: jax.Array,
    size: tuple[int, int],
    *,
    axes: tuple[int, int],
    method: Method,
    antialias: bool = False,
) -> jax.Array:
    """Resize two axes of `x` to `size` exactly as torch.nn.functional.interpolate would.

    Computed in float32 with full-precision matmuls (a resize is a few taps per output,
    so the cost is small next to the model).
    """
    ax_h, ax_w = (a % x.ndim for a in axes)
    out = x.astype(jnp.float32)
    for ax, n_out in ((ax_h, size[0]), (ax_w, size[1])):
        n_in = out.shape[ax]
        if n_in == n_out:  # every kernel here is the identity at scale 1
            continue
        m = jnp.asarray(resize_matrix(n_in, n_out, method, antialias))
        out = jnp.moveaxis(
            jnp.tensordot(m, out, axes=((1,), (ax,)), precision=jax.lax.Precision.HIGHEST), 0, ax
        )
    return out
