"""SAE files: trained SAEs as orbax folders (with sha256) or npz / safetensors for exchange,
and the orbax store of a resumable SAE training run (`checkpoints_in`)."""

from __future__ import annotations

import functools
import json
import os
import shutil
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.core.errors import MissingFileError
from ssl_jax.io.atomic import atomic_path, write_json_atomic
from ssl_jax.io.checkpoints import CheckpointSeries, restore_tree, save_tree
from ssl_jax.models.convert import CheckpointError
from ssl_jax.sae.model import PARAM_KEYS, SAE


def checkpoints_in(folder: str | os.PathLike):
    """The `checkpoints` factory for `ssl_jax.sae.train_sae`: orbax state kept in `folder`."""
    return functools.partial(TrainCheckpoints, folder)


class TrainCheckpoints:
    """The latest training state of one SAE run (one step kept), with its run record."""

    def __init__(self, root, record: dict[str, Any]):
        self.root = Path(root).absolute()
        self.record = json.loads(json.dumps(record, default=str))
        rec_path = self.root / "run.json"
        if rec_path.exists():
            old = json.loads(rec_path.read_text())
            if old != self.record:
                diff = sorted(k for k in set(old) | set(self.record)
                              if old.get(k) != self.record.get(k))
                raise CheckpointError(f"{self.root}: holds SAE training with other {diff}; use "
                                      "another checkpoint folder or delete this one")
        else:
            write_json_atomic(rec_path, self.record)
        self.series = CheckpointSeries(self.root / "latest", what="SAE training state",
                                       written_by="for a different SAE")

    def save(self, step: int, tree, meta: dict[str, Any]) -> None:
        self.series.save(step, tree, meta)

    def restore(self, like):
        """(tree, meta) of the newest step, or None."""
        got = self.series.restore(like)
        return None if got is None else got[1:]

    def close(self) -> None:
        self.series.close()


# ---- files -----------------------------------------------------------------------------------

def save_sae(path: str | os.PathLike, sae: SAE) -> Path:
    """Save an SAE: an orbax checkpoint folder (params + sae.json with scale, convention,
    training settings and the params' sha256), or for a path ending in .npz one npz file
    (the four arrays + JSON metadata, for exchange). A folder is written next to its target
    and swapped in whole, so readers never see a half-written SAE."""
    path = Path(path)
    meta = {"scale": sae.scale, "subtract_b_dec": sae.subtract_b_dec, "meta": sae.meta}
    if path.suffix == ".npz":
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, **{k: np.asarray(v) for k, v in sae.params.items()},
                     sae_meta=np.frombuffer(json.dumps(meta, default=str).encode(), np.uint8))
        return path
    path = path.absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    params = {k: np.asarray(v) for k, v in sae.params.items()}
    digest = save_tree(tmp / "params", params)
    write_json_atomic(tmp / SAE_FILE, {**meta, "sha256": digest,
                                       "shapes": {k: list(v.shape) for k, v in params.items()}})
    old = path.with_name(f".{path.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    return path


SAE_FILE = "sae.json"


def _load_orbax(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    rec_path = path / SAE_FILE
    if not rec_path.exists():
        raise CheckpointError(f"{path}: not an SAE folder (no {SAE_FILE})")
    rec = json.loads(rec_path.read_text())
    like = {k: jax.ShapeDtypeStruct(tuple(v), jnp.float32) for k, v in rec["shapes"].items()}
    # a record without a sha256 fails the check ("" matches no digest)
    params = restore_tree(path / "params", like, sha256=rec.get("sha256", ""),
                          what="SAE parameters")
    return {k: np.asarray(v) for k, v in params.items()}, rec


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        return dict(load_file(str(path)))
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def load_sae(path: str | os.PathLike, *, scale: float | None = None,
             subtract_b_dec: bool | None = None) -> SAE:
    """Load our SAE folder or npz checkpoint, or external weights (safetensors / npz with W_enc (D, F),
    b_enc (F,), W_dec (F, D), b_dec (D,)). External files default to scale 1 and the plain
    ReLU(W_enc x + b_enc) encoder; pass subtract_b_dec=True for SAELens-style weights."""
    path = Path(path)
    if path.is_dir():
        arrays, rec = _load_orbax(path)
        arrays["sae_meta"] = np.frombuffer(json.dumps(rec).encode(), np.uint8)
    elif not path.exists():
        raise MissingFileError(f"{path}: no SAE folder or weights file here")
    else:
        arrays = _read_arrays(path)
    missing = [k for k in PARAM_KEYS if k not in arrays]
    if missing:
        raise CheckpointError(f"{path}: SAE file lacks {missing} (has {sorted(arrays)})")
    meta: dict[str, Any] = {}
    if "sae_meta" in arrays:
        meta = json.loads(bytes(arrays["sae_meta"]).decode())
    we, be, wd, bd = (np.asarray(arrays[k], np.float32) for k in PARAM_KEYS)
    if be.ndim != 1 or bd.ndim != 1:
        raise CheckpointError(f"{path}: b_enc and b_dec must be vectors, got {be.shape}, {bd.shape}")
    d, f = bd.shape[0], be.shape[0]
    if we.shape == (f, d) and we.shape != (d, f):
        we = we.T  # stored as (F, D) (torch Linear layout)
    if wd.shape == (d, f) and wd.shape != (f, d):
        wd = wd.T
    if we.shape != (d, f) or wd.shape != (f, d):
        raise CheckpointError(f"{path}: expected W_enc ({d}, {f}) and W_dec ({f}, {d}), got "
                              f"{we.shape} and {wd.shape}")
    params = {"W_enc": jnp.asarray(we), "b_enc": jnp.asarray(be), "W_dec": jnp.asarray(wd),
              "b_dec": jnp.asarray(bd)}
    return SAE(params,
               float(scale if scale is not None else meta.get("scale", 1.0)),
               bool(subtract_b_dec if subtract_b_dec is not None
                    else meta.get("subtract_b_dec", False)),
               meta.get("meta", {"source": str(path)}))
