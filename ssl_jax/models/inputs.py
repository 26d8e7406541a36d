"""The input check shared by every public encoder entry point: pixels must be preprocessed.

`forward`, `encode` and the gradient maps take pixels from `ssl_jax.preprocess`; raw images
(integer dtypes, 0..255 floats) and non-finite values would go through the network without a
word and give wrong numbers, so they are refused here with a `UserError`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.core.errors import UserError
from ssl_jax.models.spec import ModelSpec

# A preprocessed image is (x·rescale - mean) / std per channel with x in 0..255: the five
# checkpoints' processors put it within [-2.12, 2.64] (ImageNet mean/std: DINOv2, DINOv3, MAE),
# [-1.80, 2.15] (OpenAI: CLIP) and [-1, 1] (SigLIP 2); bicubic/antialiased resizing overshoots
# that by a few percent at most. Raw 0..255 values (or ones normalised without the 1/255
# rescale, up to ~1100) are far above. The bound is PIXEL_BOUND, or twice a processor's own
# extreme where that is larger (a custom preprocessor_config with a small std).
PIXEL_BOUND = 10.0


def pixel_bound(spec: ModelSpec) -> float:
    """The largest |pixel| `forward` accepts for `spec` (see PIXEL_BOUND)."""
    p = spec.preprocessing
    top = 255.0 * p.rescale_factor
    extreme = max(abs(v - m) / s for m, s in zip(p.mean, p.std, strict=True) for v in (0.0, top))
    return max(PIXEL_BOUND, 2.0 * extreme)


@jax.jit
def _abs_max(x: jax.Array) -> jax.Array:
    return jnp.max(jnp.abs(x))  # NaN propagates: a non-finite pixel fails the check too


def check_pixel_values(spec: ModelSpec, pixels, *, what: str = "pixels") -> None:
    """Refuse pixels that were not preprocessed: integer dtypes (raw 0..255 images), values
    beyond `pixel_bound(spec)` and non-finite values, with a `UserError` pointing to
    `ssl_jax.preprocess`. Tracers (calls under jit/grad/vmap) are not checked; a concrete
    array costs one min/max reduction (on the host for numpy, on device for a jax array,
    fetching one scalar)."""
    if isinstance(pixels, jax.core.Tracer):
        return
    dtype = np.dtype(pixels.dtype) if hasattr(pixels, "dtype") else np.asarray(pixels).dtype
    fix = (f"preprocess the images with ssl_jax.preprocess(model, images) (the {spec.family} "
           "processor: resize, rescale to [0, 1], normalise with its mean/std), or pass "
           "check_inputs=False to skip this check")
    if not np.issubdtype(dtype, np.floating) and dtype.name != "bfloat16":
        raise UserError(f"{what} have dtype {dtype.name}: raw image values? The encoder takes "
                        f"preprocessed float pixels; {fix}")
    if isinstance(pixels, np.ndarray):
        lo, hi = float(pixels.min()), float(pixels.max())
        m = max(-lo, hi) if np.isfinite(lo) and np.isfinite(hi) else float("nan")
    else:
        m = float(_abs_max(jnp.asarray(pixels)))
    bound = pixel_bound(spec)
    if not np.isfinite(m):
        raise UserError(f"{what} contain non-finite values (NaN or inf); {fix}")
    if m > bound:
        p = spec.preprocessing
        top = 255.0 * p.rescale_factor
        lo_ok = min((0.0 - mu) / sd for mu, sd in zip(p.mean, p.std, strict=True))
        hi_ok = max((top - mu) / sd for mu, sd in zip(p.mean, p.std, strict=True))
        raise UserError(
            f"{what} reach |value| {m:.4g}, beyond {bound:g}: not preprocessed (raw 0..255 "
            f"values?). A preprocessed {spec.family} image lies within [{lo_ok:.2f}, "
            f"{hi_ok:.2f}]; {fix}")
