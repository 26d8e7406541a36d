"""Activation capture: the residual stream of one layer (CLS and patch tokens) for a dataset.

`capture(model, pixels, layer)` runs `ssl_jax.forward` in batches and keeps hidden state
`layer` (0 = embeddings, l = output of block l, negative counts from the end). Prefix tokens
are split from patch tokens with the model's `TokenLayout`: `cls` (N, D) (None for SigLIP),
`registers` (N, R, D), `patches` (N, gh*gw, D). `save_activations`/`load_activations` write
one compressed npz with the metadata as JSON, written to a temporary name and renamed.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import forward
from ..preprocess import preprocess


@dataclass
class Activations:
    """Captured activations of one layer. Arrays are float32 numpy."""

    patches: np.ndarray              # (N, P, D)
    cls: np.ndarray | None           # (N, D) or None (no CLS token)
    registers: np.ndarray | None     # (N, R, D) or None
    grid: tuple[int, int]            # patch grid (gh, gw), P = gh * gw
    layer: int                       # hidden-state index (0 = embeddings)
    image_ids: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_images(self) -> int:
        return int(self.patches.shape[0])

    @property
    def width(self) -> int:
        return int(self.patches.shape[-1])

    def tokens(self, which: str = "patches") -> np.ndarray:
        """Training matrix (M, D): "patches", "cls" or "all" (CLS and patches, flattened)."""
        if which == "patches":
            return self.patches.reshape(-1, self.width)
        if which == "cls":
            if self.cls is None:
                raise ValueError("this model has no CLS token (use tokens='patches')")
            return self.cls
        if which == "all":
            parts = [self.patches.reshape(-1, self.width)]
            if self.cls is not None:
                parts.insert(0, self.cls)
            return np.concatenate(parts, axis=0)
        raise ValueError(f"tokens must be 'patches', 'cls' or 'all', got {which!r}")

    def image_vectors(self) -> np.ndarray:
        """One vector per image (N, D): the CLS token, or the mean patch token without one."""
        return self.cls if self.cls is not None else self.patches.mean(axis=1)


def resolve_layer(layer: int, num_layers: int) -> int:
    """Hidden-state index in 0..num_layers (negative counts from the end: -1 = last block)."""
    n = num_layers + 1
    if not -n <= layer < n:
        raise ValueError(f"layer {layer} out of range for {num_layers} blocks (0..{num_layers})")
    return int(layer) % n


def capture(model, pixels: np.ndarray | Iterable[np.ndarray], layer: int = -1, *,
            batch_size: int = 8, image_ids: Sequence[str] = (),
            meta: dict[str, Any] | None = None) -> Activations:
    """Residual-stream activations of hidden state `layer` for preprocessed pixels (N, H, W, 3)
    (or an iterable of such batches), `batch_size` images per forward."""
    spec = model.spec
    idx = resolve_layer(layer, spec.num_layers)
    if isinstance(pixels, np.ndarray):
        batches: Iterable[np.ndarray] = (pixels[i:i + batch_size]
                                         for i in range(0, len(pixels), batch_size))
    else:
        batches = pixels
    cls, regs, patches, layout = [], [], [], None
    for b in batches:
        out = forward(model, np.asarray(b, np.float32), hidden_states=True)
        layout = out.layout
        h = np.asarray(out.hidden_states[:, idx], np.float32)  # (B, T, D)
        if layout.has_cls:
            cls.append(h[:, 0])
        regs.append(h[:, int(layout.has_cls):layout.num_prefix])
        patches.append(h[:, layout.num_prefix:])
    if layout is None:
        raise ValueError("capture needs at least one image")
    info = {"layer": idx, "source": str(getattr(model, "source", "")), "family": spec.family,
            "num_registers": layout.num_registers, **(meta or {})}
    return Activations(
        patches=np.concatenate(patches), cls=np.concatenate(cls) if cls else None,
        registers=np.concatenate(regs) if layout.num_registers else None,
        grid=(layout.grid_h, layout.grid_w), layer=idx, image_ids=[str(i) for i in image_ids],
        meta=info)


def capture_images(model, images: Sequence[Any], layer: int = -1, *, size=None,
                   batch_size: int = 8, image_ids: Sequence[str] = (),
                   mode: str = "squash") -> Activations:
    """`capture` from PIL images / uint8 arrays, preprocessed batch by batch (squash to `size`,
    default the model's input size)."""
    def batches():
        for i in range(0, len(images), batch_size):
            yield preprocess(model, list(images[i:i + batch_size]), mode=mode, size=size)[0]

    acts = capture(model, batches(), layer, image_ids=image_ids,
                   meta={"size": list(size) if size else None, "mode": mode})
    return acts


def capture_dataset(model, root, layer: int = -1, *, size=None, batch_size: int = 8,
                    annotated_only: bool = False) -> Activations:
    """Every image of a WikiChurches folder (sorted ids; `annotated_only`: the 21-style
    evaluation subset), loaded lazily per batch."""
    from ..data import load_dataset, load_image

    ds = load_dataset(root, lenient=True)
    if annotated_only:
        paths = [a.path for a in ds.annotated()]
    else:
        paths = [im.path for im in ds.images()] if ds.churches is not None else [
            a.path for a in ds.annotated()]
    ids = [Path(p).name for p in paths]

    def batches():
        for i in range(0, len(paths), batch_size):
            ims = [load_image(p) for p in paths[i:i + batch_size]]
            yield preprocess(model, ims, mode="squash", size=size)[0]

    return capture(model, batches(), layer, image_ids=ids,
                   meta={"size": list(size) if size else None, "dataset": str(root)})


def save_activations(path: str | os.PathLike, acts: Activations) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"grid": list(acts.grid), "layer": acts.layer, "image_ids": acts.image_ids,
            "meta": acts.meta}
    arrays = {"patches": acts.patches, "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8)}
    if acts.cls is not None:
        arrays["cls"] = acts.cls
    if acts.registers is not None:
        arrays["registers"] = acts.registers
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".npz", dir=path.parent)
    os.close(fd)
    try:
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_activations(path: str | os.PathLike) -> Activations:
    with np.load(path) as z:
        meta = json.loads(bytes(z["meta"]).decode())
        return Activations(
            patches=z["patches"], cls=z["cls"] if "cls" in z else None,
            registers=z["registers"] if "registers" in z else None, grid=tuple(meta["grid"]),
            layer=meta["layer"], image_ids=meta["image_ids"], meta=meta["meta"])
