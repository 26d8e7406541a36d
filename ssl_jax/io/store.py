"""The map cache: tensorstore zarr arrays, one per (model, method), chunked per image.

Layout under the cache root:
    cache.json                  image ids (the row order of every array) and the settings
                                that decide the maps (preprocessing, input size, dtype)
    <model>/model.json          weights source and a hash of the parameters
    <model>/<method>/           zarr array (num_images, *map_shape), one chunk per image
    <model>/done/               zarr uint8 (num_images,): 1 once the methods of that image
                                written together are all written

What the cache holds: (model, method, image) is complete when the image's `done` flag is
set AND the method's chunk of that image is present. Every read checks it (a missing image
is an error naming it, never a fill-value map), and extraction computes exactly the
incomplete cells: a method added to a finished cache, an image whose chunk was lost.

Crash safety: tensorstore's file store publishes each chunk by an atomic rename (one chunk
per image and method, stored even when it equals the fill value), and an image's `done`
flag is written only after its chunks are, so a process killed at any moment leaves each
cell either complete or incomplete; a rerun recomputes the incomplete ones. JSON files are
written to a temporary name and renamed. A cache opened `read_only` (evaluate, report) is
opened by tensorstore in read mode and nothing under it is created or written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorstore as ts

from ssl_jax.core.errors import UserError
from ssl_jax.io import atomic

FORMAT_VERSION = 1
SHOWN_IDS = 3  # image ids named in a message about missing images (then a count)


class CacheError(UserError):
    """The cache folder does not match the requested study, or is unreadable."""


class IncompleteCacheError(CacheError):
    """Maps the caller needs are not (all) in the cache."""


def describe_missing(cache: MapCache, gaps: dict[tuple[str, str], np.ndarray]) -> str:
    """'dinov2/cls: 3 of 12 images (Q1, Q2, Q3); ...' for {(model, method): missing mask}."""
    parts = []
    for (model, method), miss in gaps.items():
        idx = np.flatnonzero(miss)
        ids = ", ".join(cache.image_ids[i] for i in idx[:SHOWN_IDS])
        more = f", … {idx.size - SHOWN_IDS} more" if idx.size > SHOWN_IDS else ""
        parts.append(f"{model}/{method}: {idx.size} of {cache.num_images} images "
                     f"({ids}{more})")
    return "; ".join(parts)


def write_json_atomic(path: Path, payload: Any) -> None:
    atomic.write_json_atomic(path, payload, sort_keys=True)


def _zarr_spec(path: Path, shape: Sequence[int] | None = None, dtype: str | None = None) -> dict:
    spec: dict[str, Any] = {"driver": "zarr", "kvstore": {"driver": "file", "path": str(path)}}
    if shape is not None:
        spec["metadata"] = {
            "shape": list(shape),
            "chunks": [1, *shape[1:]],
            "dtype": {"float32": "<f4", "float16": "<f2", "uint8": "|u1"}[dtype],
            "compressor": {"id": "zstd", "level": 3},
            "fill_value": 0,
        }
    # a chunk equal to the fill value is stored too: presence means "written"
    spec["store_data_equal_to_fill_value"] = True
    return spec


def _present(path: Path, ndim: int) -> np.ndarray:
    """Image indices whose chunk file exists in the zarr array folder `path` (chunk keys are
    '<image>.0.0…'; tensorstore's temporaries have other names)."""
    tail = ".0" * (ndim - 1)
    try:
        names = [e.name for e in os.scandir(path)]
    except FileNotFoundError:
        return np.zeros(0, np.int64)
    out = [int(head) for head, sep, rest in (n.partition(".") for n in names)
           if head.isdigit() and (sep + rest) == tail]
    return np.asarray(out, np.int64)


class MapCache:
    """Opens (or creates) a cache folder for a fixed list of image ids and settings."""

    def __init__(self, root: str | Path, image_ids: Sequence[str], settings: dict[str, Any],
                 *, read_only: bool = False):
        self.root = Path(root)
        self.read_only = read_only
        self.image_ids = [str(i) for i in image_ids]
        if len(set(self.image_ids)) != len(self.image_ids):
            raise CacheError("image ids must be unique")
        self.settings = dict(settings)
        self._handles: dict[tuple[str, str], ts.TensorStore] = {}
        if read_only:
            return  # open_existing read cache.json; nothing is created
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CacheError(f"cannot create cache folder {self.root}: {e.strerror}") from None
        if not os.access(self.root, os.W_OK):
            raise CacheError(f"cache folder {self.root} is not writable")
        meta_path = self.root / "cache.json"
        meta = {"format": FORMAT_VERSION, "image_ids": self.image_ids, "settings": self.settings}
        if meta_path.exists():
            try:
                old = json.loads(meta_path.read_text())
            except json.JSONDecodeError as e:
                raise CacheError(f"{meta_path} is not valid JSON ({e}); remove the folder") from None
            if old.get("format") != FORMAT_VERSION:
                raise CacheError(f"{meta_path}: cache format {old.get('format')} is not "
                                 f"{FORMAT_VERSION}; use a new cache folder")
            if old.get("image_ids") != self.image_ids or old.get("settings") != self.settings:
                diff = [k for k in set(old.get("settings", {})) | set(self.settings)
                        if old.get("settings", {}).get(k) != self.settings.get(k)]
                what = f"settings {sorted(diff)}" if diff else "image list"
                raise CacheError(f"cache {self.root} was made for a different study ({what} "
                                 "differ); use another --cache folder or delete this one")
        else:
            write_json_atomic(meta_path, meta)

    @property
    def num_images(self) -> int:
        return len(self.image_ids)

    # ---- per-model bookkeeping -------------------------------------------------------------

    def model_info(self, model: str) -> dict[str, Any] | None:
        path = self.root / model / "model.json"
        return json.loads(path.read_text()) if path.exists() else None

    def set_model_info(self, model: str, info: dict[str, Any]) -> None:
        self._writable()
        old = self.model_info(model)
        if old is not None and old.get("params_sha256") != info.get("params_sha256"):
            raise CacheError(f"cache {self.root}: model {model!r} was extracted with other "
                             f"weights ({old.get('source')}, {old.get('params_sha256', '')[:12]}) "
                             f"than now ({info.get('source')}); use another --cache folder")
        write_json_atomic(self.root / model / "model.json", info)

    def _writable(self) -> None:
        if self.read_only:
            raise RuntimeError(f"cache {self.root} was opened read-only")  # a bug, not a user's

    def _array(self, model: str, name: str, shape_tail: Sequence[int] | None, dtype: str):
        key = (model, name)
        if key not in self._handles:
            path = self.root / model / name
            if shape_tail is None:
                if not (path / ".zarray").exists():
                    raise CacheError(f"cache {self.root} has no {name!r} maps for {model!r}; "
                                     "run `ssl-jax extract` first")
                spec = _zarr_spec(path)
                mode = {"read": True, "write": False} if self.read_only else {}
                self._handles[key] = ts.open(spec, open=True, **mode).result()
            else:
                self._writable()
                spec = _zarr_spec(path, (self.num_images, *shape_tail), dtype)
                try:
                    self._handles[key] = ts.open(spec, create=True, open=True).result()
                except ValueError as e:
                    raise CacheError(f"cache array {path} does not match the requested shape "
                                     f"{(self.num_images, *shape_tail)}: {e}") from None
        return self._handles[key]

    def _flags(self, model: str) -> np.ndarray:
        """The done flags as stored (both the flag value and its chunk must be there)."""
        path = self.root / model / "done"
        if not (path / ".zarray").exists():
            return np.zeros(self.num_images, bool)
        flags = np.asarray(self._array(model, "done", None, "uint8").read().result()) == 1
        return flags & self._chunks(path, 1)

    def _chunks(self, path: Path, ndim: int) -> np.ndarray:
        mask = np.zeros(self.num_images, bool)
        idx = _present(path, ndim)
        mask[idx[idx < self.num_images]] = True
        return mask

    def holds_maps(self) -> bool:
        """Whether any image of any model is marked done (the folder holds results)."""
        return any(_present(p / "done", 1).size for p in self.root.iterdir() if p.is_dir())

    def _stored(self, model: str, method: str) -> np.ndarray:
        path = self.root / model / method
        if not (path / ".zarray").exists():
            return np.zeros(self.num_images, bool)
        ndim = len(json.loads((path / ".zarray").read_text())["shape"])
        return self._chunks(path, ndim)

    def complete(self, model: str, method: str) -> np.ndarray:
        """(num_images,) bool: the image's maps of `method` are in the cache (done flag set
        and chunk present). False everywhere when the method was never extracted."""
        return self._flags(model) & self._stored(model, method)

    def done_mask(self, model: str) -> np.ndarray:
        """(num_images,) bool: every method stored for `model` is complete for the image."""
        mask = self._flags(model)
        for method in self.methods(model):
            mask &= self._stored(model, method)
        return mask

    def missing(self, model: str, methods: Sequence[str]) -> dict[tuple[str, str], np.ndarray]:
        """{(model, method): missing-image mask} of the `methods` not complete everywhere."""
        flags = self._flags(model)
        out = {}
        for method in methods:
            miss = ~(flags & self._stored(model, method))
            if miss.any():
                out[(model, method)] = miss
        return out

    def write(self, model: str, indices: Sequence[int], maps: dict[str, np.ndarray],
              dtype: str = "float32") -> None:
        """Write maps {method: (len(indices), *shape)} of images `indices` (any increasing
        indices), then mark them done."""
        self._writable()
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size == 0:
            return
        if np.any(np.diff(idx) <= 0):
            raise ValueError("cache writes take increasing image indices")
        # contiguous runs [a, b) of idx, and where each starts in the maps' rows
        starts = np.flatnonzero(np.r_[True, np.diff(idx) != 1])
        runs = [(int(idx[s]), int(idx[e - 1]) + 1, int(s)) for s, e
                in zip(starts, [*starts[1:], idx.size], strict=True)]
        futures = []
        for method, values in maps.items():
            values = np.asarray(values, dtype=np.dtype(dtype))
            arr = self._array(model, method, values.shape[1:], dtype)
            futures += [arr[lo:hi].write(values[s:s + hi - lo]) for lo, hi, s in runs]
        for f in futures:
            f.result()
        done = self._array(model, "done", (), "uint8")
        for f in [done[lo:hi].write(np.ones(hi - lo, np.uint8)) for lo, hi, _ in runs]:
            f.result()

    def methods(self, model: str) -> list[str]:
        folder = self.root / model
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir()
                      if p.is_dir() and p.name != "done" and (p / ".zarray").exists())

    def read(self, model: str, method: str, indices: Sequence[int] | None = None) -> np.ndarray:
        """Maps of `method` as float32, (num_images or len(indices), *shape). Every image read
        must be complete (IncompleteCacheError naming the missing ones otherwise)."""
        arr = self._array(model, method, None, "float32")
        sel = np.arange(self.num_images) if indices is None else np.asarray(indices, np.int64)
        miss = np.zeros(self.num_images, bool)
        miss[sel] = True
        miss &= ~self.complete(model, method)
        if miss.any():
            raise IncompleteCacheError(
                f"cache {self.root} is incomplete: {describe_missing(self, {(model, method): miss})}"
                "; rerun `ssl-jax extract` with the same settings to finish it")
        data = arr.read().result() if indices is None else arr[sel].read().result()
        return np.asarray(data, np.float32)


def open_existing(root: str | Path, *, read_only: bool = False) -> MapCache:
    """Open a cache folder written earlier, taking its image list and settings as they are.
    `read_only`: nothing is created or written, and a read-only folder is fine."""
    meta_path = Path(root) / "cache.json"
    if not meta_path.exists():
        raise CacheError(f"{root} is not a map cache (no cache.json); run `ssl-jax extract`")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, OSError) as e:
        raise CacheError(f"cannot read {meta_path}: {e}") from None
    if meta.get("format") != FORMAT_VERSION:
        raise CacheError(f"{meta_path}: cache format {meta.get('format')} is not "
                         f"{FORMAT_VERSION}; use a new cache folder")
    return MapCache(root, meta["image_ids"], meta["settings"], read_only=read_only)
