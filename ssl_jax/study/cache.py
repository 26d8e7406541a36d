"""The map cache: tensorstore zarr arrays, one per (model, method), chunked per image.

Layout under the cache root:
    cache.json                  image ids (the row order of every array) and the settings
                                that decide the maps (preprocessing, input size, dtype)
    <model>/model.json          weights source and a hash of the parameters
    <model>/<method>/           zarr array (num_images, *map_shape), one chunk per image
    <model>/done/               zarr uint8 (num_images,): 1 once every method of that image
                                is written

Crash safety: tensorstore's file store publishes each chunk by an atomic rename, and an
image's `done` flag is written only after all its chunks are, so a process killed at any
moment leaves each image either complete or not marked; a rerun recomputes the unmarked
ones. JSON files are written to a temporary name and renamed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorstore as ts

from .. import atomic

FORMAT_VERSION = 1


class CacheError(ValueError):
    """The cache folder does not match the requested study, or is unreadable."""


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
    return spec


class MapCache:
    """Opens (or creates) a cache folder for a fixed list of image ids and settings."""

    def __init__(self, root: str | Path, image_ids: Sequence[str], settings: dict[str, Any]):
        self.root = Path(root)
        self.image_ids = [str(i) for i in image_ids]
        if len(set(self.image_ids)) != len(self.image_ids):
            raise CacheError("image ids must be unique")
        self.settings = dict(settings)
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
        self._handles: dict[tuple[str, str], ts.TensorStore] = {}

    @property
    def num_images(self) -> int:
        return len(self.image_ids)

    # ---- per-model bookkeeping -------------------------------------------------------------

    def model_info(self, model: str) -> dict[str, Any] | None:
        path = self.root / model / "model.json"
        return json.loads(path.read_text()) if path.exists() else None

    def set_model_info(self, model: str, info: dict[str, Any]) -> None:
        old = self.model_info(model)
        if old is not None and old.get("params_sha256") != info.get("params_sha256"):
            raise CacheError(f"cache {self.root}: model {model!r} was extracted with other "
                             f"weights ({old.get('source')}, {old.get('params_sha256', '')[:12]}) "
                             f"than now ({info.get('source')}); use another --cache folder")
        write_json_atomic(self.root / model / "model.json", info)

    def _array(self, model: str, name: str, shape_tail: Sequence[int] | None, dtype: str):
        key = (model, name)
        if key not in self._handles:
            path = self.root / model / name
            if shape_tail is None:
                if not (path / ".zarray").exists():
                    raise CacheError(f"cache {self.root} has no {name!r} maps for {model!r}; "
                                     "run `ssl-jax extract` first")
                spec = _zarr_spec(path)
                self._handles[key] = ts.open(spec, open=True).result()
            else:
                spec = _zarr_spec(path, (self.num_images, *shape_tail), dtype)
                try:
                    self._handles[key] = ts.open(spec, create=True, open=True).result()
                except ValueError as e:
                    raise CacheError(f"cache array {path} does not match the requested shape "
                                     f"{(self.num_images, *shape_tail)}: {e}") from None
        return self._handles[key]

    def done_mask(self, model: str) -> np.ndarray:
        path = self.root / model / "done"
        if not (path / ".zarray").exists():
            return np.zeros(self.num_images, bool)
        return self._array(model, "done", (), "uint8").read().result().astype(bool)

    def write(self, model: str, indices: Sequence[int], maps: dict[str, np.ndarray],
              dtype: str = "float32") -> None:
        """Write maps {method: (len(indices), *shape)} of images `indices`, then mark them done."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size == 0:
            return
        if np.any(np.diff(idx) != 1):
            raise ValueError("cache writes take a contiguous run of image indices")
        lo, hi = int(idx[0]), int(idx[-1]) + 1
        futures = []
        for method, values in maps.items():
            values = np.asarray(values, dtype=np.dtype(dtype))
            arr = self._array(model, method, values.shape[1:], dtype)
            futures.append(arr[lo:hi].write(values))
        for f in futures:
            f.result()
        done = self._array(model, "done", (), "uint8")
        done[lo:hi].write(np.ones(hi - lo, np.uint8)).result()

    def methods(self, model: str) -> list[str]:
        folder = self.root / model
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir()
                      if p.is_dir() and p.name != "done" and (p / ".zarray").exists())

    def read(self, model: str, method: str, indices: Sequence[int] | None = None) -> np.ndarray:
        """Maps of `method` as float32, (num_images or len(indices), *shape)."""
        arr = self._array(model, method, None, "float32")
        data = arr.read().result() if indices is None else arr[np.asarray(indices)].read().result()
        return np.asarray(data, np.float32)


def open_existing(root: str | Path) -> MapCache:
    """Open a cache folder written earlier, taking its image list and settings as they are."""
    meta_path = Path(root) / "cache.json"
    if not meta_path.exists():
        raise CacheError(f"{root} is not a map cache (no cache.json); run `ssl-jax extract`")
    meta = json.loads(meta_path.read_text())
    return MapCache(root, meta["image_ids"], meta["settings"])
