"""The one image loader of every command: file → (H, W, 3) uint8 RGB, for any PIL mode.

`load_rgb(path)` (numpy) and `open_rgb(path)` (a PIL RGB image) are what extract, evaluate,
report, fine-tuning, probing, the SAE and the baselines read images with; `to_rgb(image)`
converts an image already in memory (what `ssl_jax.models.preprocess` does with a PIL input).

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
keeps exactly the pixels of the stored-frame rule (the floor rule of `ssl_jax.metrics.masks` is
not mirror-symmetric, so masks rasterised from mirrored boxes can differ by one pixel row or
column wherever an edge does not fall on the pixel grid).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ssl_jax.core.errors import UserError
from ssl_jax.core.pixels import (
    _NAMES,
    EXIF_ORIENTATION_TAG,
    INVERSE,
    ORIENTATIONS,
    ImageError,
    exif_orientation,
    orient_array,
    orient_boxes,
    orient_stack,
    oriented_size,
    to_rgb,
)

__all__ = ["EXIF_ORIENTATION_TAG", "INVERSE", "ORIENTATIONS", "ImageError", "OrientationWarning",
           "exif_orientation", "file_orientation", "load_rgb", "open_rgb", "orient_array",
           "orient_boxes", "orient_stack", "oriented_size", "to_rgb"]

_warned: set[str] = set()  # image files already warned about (once per file per process)


class OrientationWarning(UserWarning):
    """An image carries a non-identity EXIF orientation that the analysis does not apply."""


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
