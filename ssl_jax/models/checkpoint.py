"""Finding and reading checkpoints: alias → hub id → local HF cache → folder → tensors.

Weights are read from safetensors with numpy (memory-mapped); torch is never imported
unless the caller explicitly allows a pickled `.bin` file.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path

import jax
import numpy as np

from ssl_jax.models.convert import CheckpointError
from ssl_jax.models.families import MODELS

_ST_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
    "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}


def _bfloat16():
    import ml_dtypes  # a jax dependency

    return ml_dtypes.bfloat16


class SafetensorsFile(Mapping[str, np.ndarray]):
    """A memory-mapped safetensors file; validates the header up front."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as e:  # ValueError: empty file cannot be mapped
            raise CheckpointError(f"{self.path}: cannot read safetensors file ({e})") from None
        size = len(self._mm)
        if size < 8:
            raise CheckpointError(f"{self.path}: corrupt safetensors file (only {size} bytes)")
        (n,) = struct.unpack("<Q", self._mm[:8])
        if n > size - 8 or n > 100_000_000:
            raise CheckpointError(
                f"{self.path}: corrupt safetensors file (header length {n} exceeds file size {size})")
        try:
            header = json.loads(bytes(self._mm[8:8 + n]).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{self.path}: corrupt safetensors header ({e})") from None
        if not isinstance(header, dict):
            raise CheckpointError(f"{self.path}: corrupt safetensors header (not a JSON object)")
        header.pop("__metadata__", None)
        data_len = size - 8 - n
        self._base = 8 + n
        self._entries: dict[str, tuple[np.dtype, tuple[int, ...], int, int]] = {}
        for key, info in header.items():
            try:
                dt_name, shape, (start, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
            except (KeyError, TypeError, ValueError):
                raise CheckpointError(f"{self.path}: corrupt header entry for {key!r}") from None
            dtype = _bfloat16() if dt_name == "BF16" else _ST_DTYPES.get(dt_name)
            if dtype is None:
                raise CheckpointError(f"{self.path}: tensor {key!r} has unsupported dtype {dt_name}")
            dtype = np.dtype(dtype)
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if not (0 <= start <= end <= data_len) or end - start != nbytes:
                raise CheckpointError(
                    f"{self.path}: corrupt safetensors file (tensor {key!r} has offsets "
                    f"[{start}, {end}) for {nbytes} bytes in a {data_len}-byte data section)")
            self._entries[key] = (dtype, shape, start, end)

    def __getitem__(self, key: str) -> np.ndarray:
        dtype, shape, start, _ = self._entries[key]
        count = int(np.prod(shape, dtype=np.int64))
        return np.frombuffer(self._mm, dtype=dtype, count=count,
                             offset=self._base + start).reshape(shape)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


class _Merged(Mapping[str, np.ndarray]):
    def __init__(self, parts: list[Mapping[str, np.ndarray]]):
        self._where: dict[str, Mapping[str, np.ndarray]] = {}
        for p in parts:
            for k in p:
                self._where[k] = p

    def __getitem__(self, key):
        return self._where[key][key]

    def __iter__(self):
        return iter(self._where)

    def __len__(self):
        return len(self._where)


def read_weights(folder: Path, *, allow_pickle: bool = False) -> tuple[Mapping[str, np.ndarray], str]:
    """Tensors of the checkpoint in `folder` (sharded or not) and a description of the files."""
    index = folder / "model.safetensors.index.json"
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index}: malformed safetensors index ({e})") from None
        files = sorted(set(weight_map.values()))
        for f in files:
            if not (folder / f).exists():
                raise CheckpointError(f"{index}: lists shard {f!r}, which is not in {folder}")
        return _Merged([SafetensorsFile(folder / f) for f in files]), ", ".join(files)
    st = sorted(folder.glob("*.safetensors"))
    if st:
        preferred = [f for f in st if f.name == "model.safetensors"] or st
        return _Merged([SafetensorsFile(f) for f in preferred]), ", ".join(f.name for f in preferred)
    bins = sorted(folder.glob("*.bin"))
    if bins:
        if not allow_pickle:
            raise CheckpointError(
                f"{folder}: only pickled weights ({', '.join(b.name for b in bins)}) found. Pickle "
                "files can execute code when loaded; convert them to safetensors, or pass "
                "allow_pickle=True if you trust their origin (needs torch)")
        return _read_pickled(bins), ", ".join(b.name for b in bins)
    found = ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"
    raise CheckpointError(f"{folder}: no weights (*.safetensors) found; the folder holds: {found}")


def _read_pickled(files: list[Path]) -> Mapping[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise CheckpointError("reading pickled .bin weights needs torch; install it or convert "
                              "the checkpoint to safetensors") from None
    out: dict[str, np.ndarray] = {}
    for f in files:
        sd = torch.load(f, map_location="cpu", weights_only=True)
        for k, v in sd.items():
            out[k] = v.float().numpy() if v.is_floating_point() else v.numpy()
    return out


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: malformed JSON ({e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def resolve_source(source: str | os.PathLike, *, revision: str | None = None,
                   local_files_only: bool | None = None,
                   cache_dir: str | os.PathLike | None = None) -> Path:
    """Folder holding config.json and weights for an alias, a hub id or a local path."""
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise CheckpointError(f"{path}: no config.json in this folder")
        return path
    if path.is_file():
        raise CheckpointError(f"{path}: pass the checkpoint folder (with config.json), not a file")
    hub_id = MODELS[text].hub_id if text in MODELS else text
    if text not in MODELS and (text.count("/") != 1 or text.startswith((".", "/", "~"))):
        raise CheckpointError(
            f"unknown model {text!r}: not an alias ({', '.join(MODELS)}), not an existing folder, "
            "and not a hub id of the form 'org/name'")
    return _from_hub(hub_id, revision=revision, local_files_only=local_files_only,
                     cache_dir=cache_dir)


def _from_hub(hub_id: str, *, revision: str | None, local_files_only: bool | None,
              cache_dir: str | os.PathLike | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import HF_HUB_CACHE, HF_HUB_OFFLINE

    patterns = ["*.json", "*.safetensors"]
    where = os.fspath(cache_dir) if cache_dir is not None else HF_HUB_CACHE
    try:  # the cache first: offline works whenever the checkpoint was fetched before
        return Path(snapshot_download(hub_id, revision=revision, allow_patterns=patterns,
                                      cache_dir=cache_dir, local_files_only=True))
    except Exception as cached_error:
        offline = HF_HUB_OFFLINE if local_files_only is None else local_files_only
        if offline:
            raise CheckpointError(
                f"{hub_id}: not in the Hugging Face cache ({where}) and downloads are "
                f"disabled ({type(cached_error).__name__})") from None
    try:
        return Path(snapshot_download(hub_id, revision=revision, allow_patterns=patterns,
                                      cache_dir=cache_dir))
    except Exception as e:
        raise CheckpointError(
            f"{hub_id}: not in the Hugging Face cache ({where}) and the download failed: "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None


def tree_digest(tree) -> str:
    """sha256 over every leaf's path, dtype, shape and bytes: identifies a params pytree."""
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        a = np.asarray(leaf)
        h.update(f"{jax.tree_util.keystr(path)}|{a.dtype}|{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()
