"""Images → model pixels (NHWC float32), plus the geometric transform that maps boxes along.

Two modes:
- "native": exactly the checkpoint's Hugging Face image processor (PIL backend semantics:
  PIL resize on uint8, centre crop, float64 rescale, float32 normalise). DINOv3's processor
  resizes *float* pixels with torch's antialiased bilinear kernel; that is reproduced with
  the torch-exact matrices of `ssl_jax.core.resample`.
- "squash" (the study default): the whole image resized to the model input, no crop, so
  every expert box stays in frame; same filter and normalisation as native.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from ssl_jax.core.errors import UserError
from ssl_jax.core.pixels import to_rgb
from ssl_jax.core.resample import resize_matrix
from ssl_jax.models.spec import ModelSpec, Preprocessing

Mode = Literal["squash", "native"]


@dataclass(frozen=True)
class Transform:
    """Original image frame → model input frame: x' = x·scale_x − offset_x (same for y).

    Coordinates are continuous pixel-edge coordinates (pixel i spans [i, i+1)), so a box
    (left, top, right, bottom) maps by mapping its corners.
    """

    original_size: tuple[int, int]  # (height, width) of the source image
    input_size: tuple[int, int]  # (height, width) of the model input
    scale_x: float
    scale_y: float
    offset_x: float = 0.0
    offset_y: float = 0.0

    def boxes_to_input(self, boxes: np.ndarray) -> np.ndarray:
        """(..., 4) boxes (left, top, right, bottom) in original pixels → input pixels."""
        b = np.asarray(boxes, dtype=np.float64)
        return np.stack([b[..., 0] * self.scale_x - self.offset_x,
                         b[..., 1] * self.scale_y - self.offset_y,
                         b[..., 2] * self.scale_x - self.offset_x,
                         b[..., 3] * self.scale_y - self.offset_y], axis=-1)

    def boxes_to_original(self, boxes: np.ndarray) -> np.ndarray:
        """Inverse of `boxes_to_input`."""
        b = np.asarray(boxes, dtype=np.float64)
        return np.stack([(b[..., 0] + self.offset_x) / self.scale_x,
                         (b[..., 1] + self.offset_y) / self.scale_y,
                         (b[..., 2] + self.offset_x) / self.scale_x,
                         (b[..., 3] + self.offset_y) / self.scale_y], axis=-1)


def _to_rgb_uint8(image, index: int) -> np.ndarray:
    if isinstance(image, Image.Image):

        return to_rgb(image, f"image {index}")
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise TypeError(f"image {index}: expected a PIL image or a uint8 array, got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise UserError(f"image {index}: expected (H, W[, C]) with C in 1/3/4, got shape {arr.shape}")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    if arr.shape[-1] == 4:
        arr = np.asarray(Image.fromarray(arr, "RGBA").convert("RGB"))
    return arr


def _shortest_edge_size(h: int, w: int, short_target: int) -> tuple[int, int]:
    # transformers' get_resize_output_image_size(default_to_square=False)
    if w <= h:
        return int(short_target * h / w), short_target
    return short_target, int(short_target * w / h)


def _normalize(x: np.ndarray, p: Preprocessing) -> np.ndarray:
    mean = np.asarray(p.mean, np.float32)
    std = np.asarray(p.std, np.float32)
    return ((x - mean) / std).astype(np.float32)


def _float_resize(x: np.ndarray, size: tuple[int, int], resample: int) -> np.ndarray:
    """torch `interpolate(antialias=True)` on float (H, W, C) pixels, as torchvision does."""
    method = {2: "bilinear", 3: "bicubic"}.get(resample)
    if method is None:
        raise UserError(f"float resize supports PIL resample 2 (bilinear) or 3 (bicubic), got {resample}")
    mh = resize_matrix(x.shape[0], size[0], method, True)
    mw = resize_matrix(x.shape[1], size[1], method, True)
    return np.einsum("ih,hwc,jw->ijc", mh, x, mw, optimize=True).astype(np.float32)


def preprocess_one(
    p: Preprocessing, image, *, mode: Mode = "squash", size: tuple[int, int] | None = None,
    index: int = 0,
) -> tuple[np.ndarray, Transform]:
    """One image → ((H, W, 3) float32 pixels, Transform)."""
    rgb = _to_rgb_uint8(image, index)
    h, w = rgb.shape[:2]
    if mode == "squash":
        out_h, out_w = size or p.input_size
        resized_size, crop = (out_h, out_w), None
    elif mode == "native":
        if size is not None:
            raise UserError("size= applies to mode='squash' only; 'native' uses the processor's sizes")
        if p.resize_mode == "shortest_edge":
            assert isinstance(p.size, int)
            resized_size = _shortest_edge_size(h, w, p.size)
        else:
            resized_size = p.size  # type: ignore[assignment]
        crop = p.crop
    else:
        raise UserError(f"mode must be 'squash' or 'native', got {mode!r}")

    if p.rescale_before_resize:
        x = rgb.astype(np.float64) * p.rescale_factor
        x = _float_resize(x.astype(np.float32), resized_size, p.resample)
    else:
        pil = Image.fromarray(rgb).resize((resized_size[1], resized_size[0]), resample=p.resample)
        x = np.asarray(pil)
    rh, rw = resized_size
    top = left = 0
    if crop is not None:
        ch, cw = crop
        if ch > rh or cw > rw:
            raise UserError(f"image {index}: resized to {rh}x{rw}, smaller than the crop {ch}x{cw}")
        top, left = (rh - ch) // 2, (rw - cw) // 2
        x = x[top:top + ch, left:left + cw]
    if not p.rescale_before_resize:
        x = (x.astype(np.float64) * p.rescale_factor).astype(np.float32)
    pixels = _normalize(x, p)
    t = Transform((h, w), pixels.shape[:2], rw / w, rh / h, float(left), float(top))
    return pixels, t


def preprocess(
    model, images, *, mode: Mode = "squash", size: tuple[int, int] | None = None
) -> tuple[np.ndarray, list[Transform]]:
    """Images (PIL or uint8 arrays; one or a sequence) → (pixels (B, H, W, 3) float32, transforms).

    `model` is a Model, a ModelSpec or a Preprocessing. `size` overrides the squash target
    (it must be a multiple of the patch size to be fed to the model).
    """
    p = _preprocessing_of(model)
    if isinstance(images, (Image.Image, np.ndarray)) and not (
            isinstance(images, np.ndarray) and images.ndim == 4):
        images = [images]
    if not isinstance(images, (Sequence, np.ndarray)) or len(images) == 0:
        raise UserError("preprocess needs at least one image")
    outs = [preprocess_one(p, im, mode=mode, size=size, index=i) for i, im in enumerate(images)]
    return np.stack([o[0] for o in outs]), [o[1] for o in outs]


def _preprocessing_of(model) -> Preprocessing:
    if isinstance(model, Preprocessing):
        return model
    if isinstance(model, ModelSpec):
        return model.preprocessing
    spec = getattr(model, "spec", None)
    if isinstance(spec, ModelSpec):
        return spec.preprocessing
    raise TypeError(f"expected a Model, ModelSpec or Preprocessing, got {type(model).__name__}")
