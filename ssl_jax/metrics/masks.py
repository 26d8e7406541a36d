"""Expert boxes → boolean pixel masks, in any frame (original image, squashed or cropped input).

The rule (SPEC R3.2, the original's ``BoundingBox.to_mask``), for a box with normalised
``(left, top, right, bottom)`` in an ``H x W`` frame::

    x1 = floor(left * W),  x2 = floor(right * W),  x2 = max(x2, x1 + 1)   # at least 1 px
    y1 = floor(top * H),   y2 = floor(bottom * H), y2 = max(y2, y1 + 1)
    mask[y1:y2, x1:x2] = True                                            # end-exclusive

The products are taken in float64 on the host, exactly as the original's Python floats (a
float32 product can move a boundary by one pixel). For the non-negative coordinates of an
image frame, floor equals the original's ``int()``; in a cropped frame coordinates can be
negative or beyond the edge, and the edges are then clipped to ``[0, W] x [0, H]`` (a box
wholly outside the crop gives an empty mask).

A *frame* is either a size ``(H, W)`` — the box's fractions are taken of that size, which is
the squash frame and the original image frame alike — or a `ssl_jax.models.preprocess.Transform`
(anything with ``original_size, input_size, scale_x, scale_y, offset_x, offset_y``): the box
goes through the transform's resize and crop and is rasterised in its ``input_size``. A squash
Transform gives exactly the masks of the plain ``input_size`` frame.

Everything is vectorised over leading axes; `box_edges` (host, float64) then `edges_to_masks`
(numpy or jax.numpy) lets masks be built on a device from small integer arrays; `mask_edges`
goes back from (turned) box masks to edges.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _is_transform(frame: Any) -> bool:
    return all(hasattr(frame, a) for a in ("original_size", "input_size", "scale_x", "scale_y"))


def frame_size(frame) -> tuple[int, int]:
    """(H, W) of the pixel grid a frame rasterises into."""
    if _is_transform(frame):
        h, w = frame.input_size
    else:
        try:
            h, w = frame
        except (TypeError, ValueError):
            raise TypeError(f"a frame is (height, width) or a preprocessing Transform, got {frame!r}") from None
    if int(h) != h or int(w) != w or h <= 0 or w <= 0:
        raise ValueError(f"frame size must be positive integers, got {(h, w)}")
    return int(h), int(w)


def _resized_extent(scale: float, original: int) -> float:
    # Transform stores scale = resized / original; the resized extent is an integer, so
    # recover it exactly (a squash frame then multiplies fractions by the very same size).
    r = float(scale) * float(original)
    return float(round(r)) if abs(r - round(r)) < 1e-6 else r


def boxes_to_frame(boxes, frame) -> np.ndarray:
    """(..., 4) normalised (left, top, right, bottom) → float64 pixel coordinates in `frame`."""
    b = np.asarray(boxes, dtype=np.float64)
    if b.shape[-1:] != (4,):
        raise ValueError(f"boxes must have shape (..., 4) (left, top, right, bottom), got {b.shape}")
    if _is_transform(frame):
        oh, ow = frame.original_size
        sx = _resized_extent(frame.scale_x, ow)
        sy = _resized_extent(frame.scale_y, oh)
        ox, oy = float(getattr(frame, "offset_x", 0.0)), float(getattr(frame, "offset_y", 0.0))
        return np.stack([b[..., 0] * sx - ox, b[..., 1] * sy - oy,
                         b[..., 2] * sx - ox, b[..., 3] * sy - oy], axis=-1)
    h, w = frame_size(frame)
    return b * np.array([w, h, w, h], dtype=np.float64)


def pixel_edges(boxes_px, size: tuple[int, int]) -> np.ndarray:
    """(..., 4) float pixel boxes → int32 (x1, y1, x2, y2) edges by the rule, clipped to the frame.

    NaN boxes (padding) give empty edges (0, 0, 0, 0).
    """
    h, w = size
    b = np.asarray(boxes_px, dtype=np.float64)
    nan = np.isnan(b).any(axis=-1)
    b = np.where(nan[..., None], 0.0, b)
    f = np.floor(b)
    x1, y1, x2, y2 = f[..., 0], f[..., 1], f[..., 2], f[..., 3]
    x2 = np.maximum(x2, x1 + 1)
    y2 = np.maximum(y2, y1 + 1)
    e = np.stack([np.clip(x1, 0, w), np.clip(y1, 0, h), np.clip(x2, 0, w), np.clip(y2, 0, h)], axis=-1)
    return np.where(nan[..., None], 0, e).astype(np.int32)


def box_edges(boxes, frame) -> np.ndarray:
    """(..., 4) normalised boxes → int32 (x1, y1, x2, y2) pixel edges in `frame` (end-exclusive)."""
    return pixel_edges(boxes_to_frame(boxes, frame), frame_size(frame))


def edges_to_masks(edges, size: tuple[int, int], xp: Any = np):
    """(..., 4) int edges → (..., H, W) bool masks. `xp` may be jax.numpy (jit-friendly)."""
    h, w = size
    e = xp.asarray(edges)
    rows = xp.arange(h)
    cols = xp.arange(w)
    x1, y1, x2, y2 = (e[..., i][..., None] for i in range(4))
    in_rows = ((rows >= y1) & (rows < y2))[..., :, None]  # (..., H, 1)
    in_cols = ((cols >= x1) & (cols < x2))[..., None, :]  # (..., 1, W)
    return in_rows & in_cols


def mask_edges(masks) -> np.ndarray:
    """(..., H, W) bool box masks → (..., 4) int32 edges (x1, y1, x2, y2) of each mask's
    bounding box, end-exclusive; (0, 0, 0, 0) for an empty mask. For rectangles it inverts
    `edges_to_masks`: the edges of a box mask after a flip or transpose of the frame."""
    m = np.asarray(masks, bool)
    h, w = m.shape[-2:]
    rows, cols = m.any(axis=-1), m.any(axis=-2)
    e = np.stack([cols.argmax(-1), rows.argmax(-1), w - cols[..., ::-1].argmax(-1),
                  h - rows[..., ::-1].argmax(-1)], axis=-1)
    return np.where(rows.any(axis=-1)[..., None], e, 0).astype(np.int32)


def rasterize(boxes, frame) -> np.ndarray:
    """(K, 4) normalised boxes → (K, H, W) bool masks in `frame` (any leading shape works)."""
    return edges_to_masks(box_edges(boxes, frame), frame_size(frame))


def union_mask(boxes, frame) -> np.ndarray:
    """(K, 4) normalised boxes → (H, W) bool union (all False for K = 0)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return rasterize(b, frame).any(axis=0)


def pad_boxes(boxes: Sequence, fill: float = np.nan) -> tuple[np.ndarray, np.ndarray]:
    """Ragged list of (K_i, 4) boxes (or ImageAnnotations) → ((N, K_max, 4) float64, (N, K_max) valid)."""
    arrs = [np.asarray(getattr(b, "boxes", b), np.float64).reshape(-1, 4) for b in boxes]
    k = max((a.shape[0] for a in arrs), default=0)
    out = np.full((len(arrs), k, 4), fill, np.float64)
    valid = np.zeros((len(arrs), k), bool)
    for i, a in enumerate(arrs):
        out[i, :len(a)] = a
        valid[i, :len(a)] = True
    return out, valid


def _frames(frames, n: int) -> list:
    if _is_transform(frames) or (isinstance(frames, tuple) and len(frames) == 2
                                 and all(isinstance(v, (int, np.integer)) for v in frames)):
        return [frames] * n
    frames = list(frames)
    if len(frames) != n:
        raise ValueError(f"got {len(frames)} frames for {n} images")
    sizes = {frame_size(f) for f in frames}
    if len(sizes) > 1:
        raise ValueError(f"frames of one batch must share a size, got {sorted(sizes)}")
    return frames


def batch_edges(boxes: Sequence, frames) -> tuple[np.ndarray, np.ndarray]:
    """Per-image boxes (ragged) and frames (one for all, or one per image) → ((N, K_max, 4)
    int32 edges, (N, K_max) valid). Padding rows have empty edges."""
    padded, valid = pad_boxes(boxes)
    fr = _frames(frames, len(padded))
    size = frame_size(fr[0]) if fr else (1, 1)
    edges = np.zeros(padded.shape, np.int32)
    for i, f in enumerate(fr):  # per-image geometry differs; the work is (K_max, 4) numbers
        edges[i] = pixel_edges(boxes_to_frame(padded[i], f), size)
    return edges, valid


def rasterize_batch(boxes: Sequence, frames) -> tuple[np.ndarray, np.ndarray]:
    """→ ((N, K_max, H, W) bool box masks, (N, K_max) valid); padding masks are all False."""
    edges, valid = batch_edges(boxes, frames)
    size = frame_size(_frames(frames, len(edges))[0]) if len(edges) else (1, 1)
    return edges_to_masks(edges, size), valid


def union_masks(boxes: Sequence, frames) -> np.ndarray:
    """Per-image boxes (or ImageAnnotations) → (N, H, W) bool union masks."""
    edges, _ = batch_edges(boxes, frames)
    n = len(edges)
    size = frame_size(_frames(frames, n)[0]) if n else (1, 1)
    out = np.zeros((n, *size), bool)
    for k in range(edges.shape[1]):  # OR box by box: memory stays (N, H, W)
        out |= edges_to_masks(edges[:, k], size)
    return out
