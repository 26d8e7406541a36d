"""The one image loader of every command: file → (H, W, 3) uint8 RGB, for any PIL mode.

`load_rgb(path)` (numpy) and `open_rgb(path)` (a PIL RGB image) are what extract, evaluate,
report, fine-tuning, probing, the SAE and the baselines read images with; `to_rgb(image)`
converts an image already in memory (what `ssl_jax.preprocess` does with a PIL input).

Pixel rule, per PIL mode (the colour channels are never rescaled for 8-bit data):

* ``RGB`` as stored; ``1`` / ``L`` → grey replicated to three channels.
* Alpha (``LA``, ``PA``, ``RGBA``, ``RGBa``, ``La``, ``P`` with transparency) is DROPPED: the
  colour channels as stored (un-premultiplied for ``RGBa`` / ``La``), no compositing. That is
  the original study's ``convert("RGB")`` rule, kept for comparability: WikiChurches photos
  are JPEGs without alpha, and compositing on white would change every transparent pixel of
  any other image relative to the original pipeline.
* ``P`` → its palette colours; ``CMYK`` → PIL's naive ``(255 - C)(255 - K) / 255`` (an ICC
  profile, if any, is not applied); ``YCbCr`` / ``HSV`` / ``LAB`` → PIL's conversion.
* 16-bit integers (``I;16``, ``I;16L``, ``I;16B``, ``I;16N``) → ``round(v * 255 / 65535)``
  (their full range; PIL's own ``convert("RGB")`` clips them to 255, so a 16-bit PNG read
  that way comes out white). ``I;16S`` is shifted by 32768 first.
* 32-bit integers (``I``): values within 0..65535 are 16-bit data in PIL's 32-bit container
  (what older Pillow gives for 16-bit PNG/TIFF) and scale like 16-bit; wider data is
  stretched linearly over the image's own min..max, with a warning (brightness is then not
  comparable between images).
* Floats (``F``): values within [0, 1] → ``round(v * 255)``; others are stretched over the
  image's own min..max with a warning; NaN or infinite pixels are refused.

Decompression bombs: an image whose header claims more than ``max_pixels`` pixels (default:
PIL's ``Image.MAX_IMAGE_PIXELS``, read at call time) is refused before decoding with a
one-line `ImageError` naming the file and the pixel count against the limit. Missing,
unreadable, truncated or non-image files give a one-line `ImageError` naming the file.

EXIF orientation (tag 274). ``orientation="stored"`` (the default, as the original study)
analyses the pixels in their stored frame and warns once per image file and process when the
tag says viewers turn the image; ``orientation="exif"`` returns the frame viewers show
(`orient_array`). Expert boxes (SPEC R3.2: fractions of the image as the original pipeline
reads it, i.e. the stored frame) go to that frame with `orient_boxes` (geometry) or, for
masks, by transposing the stored-frame masks with `orient_array` / `orient_stack`, which
keeps exactly the pixels of the stored-frame rule (the floor rule of `ssl_jax.data.masks` is
not mirror-symmetric, so masks rasterised from mirrored boxes can differ by one pixel row or
column wherever an edge does not fall on the pixel grid).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import UserError

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

_warned: set[str] = set()  # image files already warned about (once per file per process)


class ImageError(UserError):
    """An image file that cannot be read as asked (missing, unreadable, too large)."""


class OrientationWarning(UserWarning):
    """An image carries a non-identity EXIF orientation that the analysis does not apply."""


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


def _bomb_message(source: str, pixels: int, limit: int) -> str:
    return (f"{source}: image of {pixels:,} pixels exceeds the limit of {limit:,} pixels "
            "(a decompression bomb?); pass a larger max_pixels if the image is genuine")


def _open(path: Path, max_pixels: int | None) -> Image.Image:
    source = str(path)
    if not path.exists():
        raise ImageError(f"image file {source} does not exist")
    try:
        im = Image.open(path)
    except Image.DecompressionBombError as e:  # beyond PIL's own hard limit
        m = re.search(r"\((\d+) pixels\) exceeds limit of (\d+)", str(e))
        raise ImageError(_bomb_message(source, int(m[1]), int(m[2])) if m
                         else f"{source}: {e}") from None
    except UnidentifiedImageError:
        raise ImageError(f"cannot read image {source}: not an image format PIL knows") from None
    except OSError as e:
        raise ImageError(f"cannot read image {source}: {e.strerror or e}") from None
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else int(max_pixels)
    w, h = im.size
    if limit is not None and w * h > limit:
        im.close()
        raise ImageError(_bomb_message(source, w * h, limit))
    return im


def load_rgb(path: str | Path, *, orientation: str = "stored",
             max_pixels: int | None = None) -> np.ndarray:
    """An image file → (H, W, 3) uint8 RGB (see the module's rules).

    orientation: "stored" (pixels as stored; warns once per file when EXIF says viewers turn
    it) or "exif" (the frame viewers show). max_pixels: refuse larger images (None: PIL's
    ``Image.MAX_IMAGE_PIXELS``).
    """
    if orientation not in ORIENTATIONS:
        raise UserError(f"orientation must be one of {list(ORIENTATIONS)}, got {orientation!r}")
    path = Path(path)
    source = str(path)
    im = _open(path, max_pixels)
    try:
        with im:
            im.load()
            tag = exif_orientation(im)
            rgb = to_rgb(im, source)
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError) as e:  # truncated or corrupt data
        raise ImageError(f"cannot read image {source}: {e}") from None
    if tag == 1:
        return rgb
    if orientation == "exif":
        return np.ascontiguousarray(orient_array(rgb, tag, axes=(0, 1)))
    if source not in _warned:
        _warned.add(source)
        warnings.warn(f"{source}: EXIF Orientation {tag} (viewers show it {_NAMES[tag]}) is "
                      "not applied: analysed in its stored frame, as the original study; set "
                      "orientation = \"exif\" for the frame viewers show", OrientationWarning,
                      stacklevel=2)
    return rgb


def open_rgb(path: str | Path, **kwargs: Any) -> Image.Image:
    """`load_rgb` as a PIL RGB image."""
    return Image.fromarray(load_rgb(path, **kwargs), "RGB")


def file_orientation(path: str | Path, orientation: str = "exif") -> int:
    """The EXIF orientation tag a file's pixels are turned by under `orientation` (always 1
    for "stored"); reads only the header."""
    if orientation not in ORIENTATIONS:
        raise UserError(f"orientation must be one of {list(ORIENTATIONS)}, got {orientation!r}")
    if orientation == "stored":
        return 1
    path = Path(path)
    im = _open(path, None)
    with im:
        return exif_orientation(im)
