"""Activation capture: the residual stream of one layer (CLS and patch tokens) for a dataset.

`capture(model, pixels, layer)` runs `ssl_jax.forward` in batches and keeps hidden state
`layer` (0 = embeddings, l = output of block l, negative counts from the end). Prefix tokens
are split from patch tokens with the model's `TokenLayout`: `cls` (N, D) (None for SigLIP),
`registers` (N, R, D), `patches` (N, gh*gw, D). `save_activations`/`load_activations` write
a tensorstore activation store (resumable, one chunk per image) or one npz for exchange.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ssl_jax import forward
from ssl_jax.core.errors import MissingFileError, UserError
from ssl_jax.core.validate import OptionError
from ssl_jax.io.atomic import atomic_path
from ssl_jax.io.dataset import load_dataset, load_image
from ssl_jax.io.store import IncompleteCacheError, MapCache, open_existing
from ssl_jax.models.checkpoint import tree_digest
from ssl_jax.models.preprocess import preprocess


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
                raise OptionError("this model has no CLS token (use tokens='patches')")
            return self.cls
        if which == "all":
            parts = [self.patches.reshape(-1, self.width)]
            if self.cls is not None:
                parts.insert(0, self.cls)
            return np.concatenate(parts, axis=0)
        raise OptionError(f"tokens must be 'patches', 'cls' or 'all', got {which!r}")

    def image_vectors(self) -> np.ndarray:
        """One vector per image (N, D): the CLS token, or the mean patch token without one."""
        return self.cls if self.cls is not None else self.patches.mean(axis=1)


def resolve_layer(layer: int, num_layers: int) -> int:
    """Hidden-state index in 0..num_layers (negative counts from the end: -1 = last block)."""
    n = num_layers + 1
    if not -n <= layer < n:
        raise OptionError(f"layer {layer} out of range for {num_layers} blocks (0..{num_layers})")
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


def _dataset_paths(root, annotated_only: bool) -> list[Path]:

    ds = load_dataset(root, lenient=True)
    if annotated_only or ds.churches is None:
        return [Path(a.path) for a in ds.annotated()]
    return [Path(im.path) for im in ds.images()]


def capture_dataset(model, root, layer: int = -1, *, size=None, batch_size: int = 8,
                    annotated_only: bool = False, store: str | os.PathLike | None = None,
                    progress=None) -> Activations:
    """Every image of a WikiChurches folder (sorted ids; `annotated_only`: the 21-style
    evaluation subset), loaded lazily per batch.

    With `store`, activations stream batch by batch into a tensorstore cache folder (one
    zarr chunk per image, a done flag per image, the weights' sha256 recorded): nothing of
    size (images × tokens × width) is held in memory while capturing, and a killed run
    resumes where it stopped. The returned Activations are read back from the store.
    `progress(done, total)` is called after each batch."""
    paths = _dataset_paths(root, annotated_only)
    if not paths:
        raise UserError(f"{root}: no images to capture")
    ids = [p.name for p in paths]
    idx = resolve_layer(layer, model.spec.num_layers)
    meta = {"size": list(size) if size else None, "dataset": str(root)}

    def load(lo: int, hi: int) -> np.ndarray:
        return preprocess(model, [load_image(p) for p in paths[lo:hi]], mode="squash",
                          size=size)[0]

    if store is None:
        def batches():
            for lo in range(0, len(paths), batch_size):
                yield load(lo, lo + batch_size)
                if progress:
                    progress(min(lo + batch_size, len(paths)), len(paths))

        return capture(model, batches(), idx, image_ids=ids, meta=meta)

    first = load(0, batch_size)  # its shape fixes the patch grid recorded in the store
    lay = model.spec.layout(first.shape[1], first.shape[2])
    cache = _open_store(store, ids, {"layer": idx, "grid": [lay.grid_h, lay.grid_w],
                                     "family": model.spec.family, **meta})
    cache.set_model_info(STORE_KEY, {"source": str(getattr(model, "source", "")),
                                     "params_sha256": tree_digest(model.params)})
    done = cache.done_mask(STORE_KEY)
    for lo in range(0, len(paths), batch_size):
        hi = min(lo + batch_size, len(paths))
        if not done[lo:hi].all():
            a = capture(model, [first if lo == 0 else load(lo, hi)], idx)
            cache.write(STORE_KEY, range(lo, hi), _arrays(a))
        if progress:
            progress(hi, len(paths))
    return load_activations(store)


STORE_KEY = "activations"  # the one "model" entry of an activation store (a MapCache)


def _arrays(acts: Activations) -> dict[str, np.ndarray]:
    out = {"patches": acts.patches}
    if acts.cls is not None:
        out["cls"] = acts.cls
    if acts.registers is not None:
        out["registers"] = acts.registers
    return out


def _open_store(path, image_ids, settings):

    return MapCache(path, image_ids, {"kind": "sae-activations", **settings})


def save_activations(path: str | os.PathLike, acts: Activations) -> Path:
    """A tensorstore activation store (a folder; the default) or, for a path ending in .npz,
    one compressed npz (for exchange). Both are written atomically."""
    path = Path(path)
    meta = {"grid": list(acts.grid), "layer": acts.layer, "image_ids": acts.image_ids,
            "meta": acts.meta}
    if path.suffix != ".npz":
        cache = _open_store(path, acts.image_ids or [str(i) for i in range(acts.num_images)],
                            {"layer": acts.layer, "grid": list(acts.grid), **acts.meta})
        cache.write(STORE_KEY, range(acts.num_images), _arrays(acts))
        return path
    arrays = {**_arrays(acts), "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8)}
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)
    return path


def load_activations(path: str | os.PathLike) -> Activations:
    """Read an activation store folder (every image must be complete) or an npz file."""
    path = Path(path)
    if path.is_dir():

        cache = open_existing(path)
        done = cache.done_mask(STORE_KEY)
        if not done.all():
            raise IncompleteCacheError(f"{path}: activation store is incomplete ({int(done.sum())} "
                                       f"of {done.size} images); rerun the capture to finish it")
        st = dict(cache.settings)
        st.pop("kind", None)
        layer = int(st.pop("layer"))
        names = cache.methods(STORE_KEY)
        patches = cache.read(STORE_KEY, "patches")
        grid = st.pop("grid")
        return Activations(
            patches=patches,
            cls=cache.read(STORE_KEY, "cls") if "cls" in names else None,
            registers=cache.read(STORE_KEY, "registers") if "registers" in names else None,
            grid=(int(grid[0]), int(grid[1])), layer=layer, image_ids=list(cache.image_ids),
            meta=st)
    if not path.exists():
        raise MissingFileError(f"{path}: no activation store or npz file here")
    with np.load(path) as z:
        meta = json.loads(bytes(z["meta"]).decode())
        return Activations(
            patches=z["patches"], cls=z["cls"] if "cls" in z else None,
            registers=z["registers"] if "registers" in z else None, grid=tuple(meta["grid"]),
            layer=meta["layer"], image_ids=meta["image_ids"], meta=meta["meta"])
