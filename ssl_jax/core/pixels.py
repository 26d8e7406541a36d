"""Pixels and frames without files: any PIL image mode → (H, W, 3) uint8 RGB (`to_rgb`),
and the eight EXIF orientations as array / box transforms. The file loader that applies them
is `ssl_jax.io.images` (its docstring states the pixel and orientation rules)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from PIL import Image

from ssl_jax.core.errors import UserError

ORIENTATIONS = ("stored", "exif")
EXIF_ORIENTATION_TAG = 0x0112

# orientation tag → (transpose, flip rows, flip columns), applied in that order; the frame
# viewers show. 1 identity, 2 mirror left-right, 3 rotate 180, 4 mirror top-bottom,
# 5 transpose, 6 rotate 90 clockwise, 7 transverse, 8 rotate 90 counter-clockwise.
_OPS = {1: (False, False, False), 2: (False, False, True), 3: (False, True, True),
        4: (False, True, False), 5: (True, False, False), 6: (True, False, True),
        7: (True, True, True), 8: (True, True, False)}
_NAMES = {1: "upright", 2: "mirrored left-right", 3: "rotated 180°",
          4: "mirrored top-bottom", 5: "transposed", 6: "rotated 90° clockwise",
          7: "transversed", 8: "rotated 90° counter-clockwise"}
INVERSE = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 8, 7: 7, 8: 6}

class ImageError(UserError):
    """An image file that cannot be read as asked (missing, unreadable, too large)."""


# ---- geometry -------------------------------------------------------------------------------


def _check_orientation(o: int) -> int:
    if o not in _OPS:
        raise ValueError(f"EXIF orientation must be 1..8, got {o!r}")
    return int(o)


def oriented_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """(H, W) of the stored frame → (H, W) of the frame viewers show."""
    h, w = size
    return (w, h) if _OPS[_check_orientation(orientation)][0] else (h, w)


def orient_array(a, orientation: int, axes: tuple[int, int] = (-2, -1)) -> np.ndarray:
    """Stored-frame array → the frame viewers show, on the (row, column) `axes`
    (``(0, 1)`` for an (H, W, C) image, the default for (..., H, W) maps and masks)."""
    transpose, flip_y, flip_x = _OPS[_check_orientation(orientation)]
    a = np.asarray(a)
    y, x = axes
    if transpose:
        a = np.swapaxes(a, y, x)
    if flip_y:
        a = np.flip(a, y)
    if flip_x:
        a = np.flip(a, x)
    return a


def orient_stack(a, orientations: Sequence[int] | None) -> np.ndarray:
    """(N, ..., H, W) stored-frame maps or masks of N images → each in its image's viewed
    frame (H == W when any orientation transposes). ``None`` returns `a` unchanged."""
    a = np.asarray(a)
    if orientations is None:
        return a
    o = np.asarray(orientations, int)
    if o.shape != (a.shape[0],):
        raise ValueError(f"{len(o)} orientations for {a.shape[0]} images")
    if np.isin(o, (5, 6, 7, 8)).any() and a.shape[-2] != a.shape[-1]:
        raise ValueError(f"transposing orientations need square frames, got {a.shape[-2:]}")
    out = a.copy()
    for k in np.unique(o):  # one vectorised op per distinct tag (at most 8)
        sel = o == k
        out[sel] = orient_array(a[sel], int(k))
    return out


def orient_boxes(boxes, orientation: int) -> np.ndarray:
    """(..., 4) normalised (left, top, right, bottom) boxes of the stored frame → the same
    regions in the frame viewers show (exact geometry, float64)."""
    transpose, flip_y, flip_x = _OPS[_check_orientation(orientation)]
    b = np.asarray(boxes, np.float64)
    if b.shape[-1:] != (4,):
        raise ValueError(f"boxes must have shape (..., 4), got {b.shape}")
    x0, y0, x1, y1 = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    if transpose:
        x0, y0, x1, y1 = y0, x0, y1, x1
    if flip_y:
        y0, y1 = 1.0 - y1, 1.0 - y0
    if flip_x:
        x0, x1 = 1.0 - x1, 1.0 - x0
    return np.stack([x0, y0, x1, y1], axis=-1)


# ---- pixels ---------------------------------------------------------------------------------


def _stretch(a: np.ndarray, source: str, what: str) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    warnings.warn(f"{source}: {what} pixel values span {lo:g}..{hi:g}, outside the format's "
                  "nominal range; stretched linearly over that range to 0..255", stacklevel=3)
    if hi == lo:
        return np.zeros(a.shape, np.uint8)
    return np.rint((a.astype(np.float64) - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _grey_to_uint8(a: np.ndarray, mode: str, source: str) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype.kind == "u" and a.dtype.itemsize == 2:
        return np.rint(a.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
    if a.dtype.kind == "i" and a.dtype.itemsize == 2:
        return np.rint((a.astype(np.float64) + 32768.0) * (255.0 / 65535.0)).astype(np.uint8)
    if a.dtype.kind in "iu":
        if a.size and (a.min() < 0 or a.max() > 65535):
            return _stretch(a, source, f"{mode} (32-bit)")
        return np.rint(a.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
    if a.dtype.kind == "f":
        bad = int((~np.isfinite(a)).sum())
        if bad:
            raise ImageError(f"{source}: {bad} of {a.size} pixels of the float ({mode}) image "
                             "are NaN or infinite")
        if a.size and (a.min() < 0 or a.max() > 1):
            return _stretch(a, source, f"float ({mode})")
        return np.rint(a.astype(np.float64) * 255.0).astype(np.uint8)
    raise ImageError(f"{source}: unsupported pixel type {a.dtype} (mode {mode})")


def to_rgb(image: Image.Image, source: str = "image") -> np.ndarray:
    """A PIL image of any mode → (H, W, 3) uint8 RGB by the module's rule (alpha dropped)."""
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image)
    if mode in ("1", "L"):
        grey = np.asarray(image.convert("L"))
    elif mode in ("LA", "La"):
        grey = np.asarray(image.convert("LA"))[..., 0]
    elif mode in ("RGBA", "RGBa", "RGBX", "PA", "P"):
        return np.asarray(image.convert("RGBA"))[..., :3].copy()
    elif mode.startswith("I") or mode == "F":
        grey = _grey_to_uint8(np.asarray(image), mode, source)
    else:  # CMYK, YCbCr, LAB, HSV: PIL's colour conversions
        try:
            return np.asarray(image.convert("RGB"))
        except (ValueError, OSError) as e:
            raise ImageError(f"{source}: cannot convert mode {mode} to RGB ({e})") from None
    return np.repeat(grey[..., None], 3, axis=-1)


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag of an open image (1 when absent or not 1..8)."""
    try:
        o = image.getexif().get(EXIF_ORIENTATION_TAG, 1)
    except Exception:
        return 1
    return int(o) if isinstance(o, int) and o in _OPS else 1
