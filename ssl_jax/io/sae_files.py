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

from ssl_jax.io.atomic import atomic_path, write_json_atomic
from ssl_jax.io.runs import abstract_tree
from ssl_jax.models.checkpoint import tree_digest
from ssl_jax.sae.model import PARAM_KEYS, SAE


def checkpoints_in(folder: str | os.PathLike):
    """The `checkpoints` factory for `ssl_jax.sae.train_sae`: orbax state kept in `folder`."""
    return functools.partial(TrainCheckpoints, folder)


class TrainCheckpoints:
    """The latest training state of one SAE run (orbax, max 1 kept), with its run record."""

    def __init__(self, root, record: dict[str, Any]):
        import orbax.checkpoint as ocp

        self.root = Path(root).absolute()
        self.record = json.loads(json.dumps(record, default=str))
        rec_path = self.root / "run.json"
        if rec_path.exists():
            old = json.loads(rec_path.read_text())
            if old != self.record:
                diff = sorted(k for k in set(old) | set(self.record)
                              if old.get(k) != self.record.get(k))
                raise ValueError(f"{self.root}: holds SAE training with other {diff}; use "
                                 "another checkpoint folder or delete this one")
        else:
            write_json_atomic(rec_path, self.record)
        self.mgr = ocp.CheckpointManager(self.root / "latest", options=ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, enable_async_checkpointing=False))

    def save(self, step: int, tree, meta: dict[str, Any]) -> None:
        import orbax.checkpoint as ocp

        if step in self.mgr.all_steps():
            return
        meta = {**meta, "sha256": tree_digest(tree)}
        self.mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                                    meta=ocp.args.JsonSave(meta)))

    def restore(self, like):
        import orbax.checkpoint as ocp


        step = self.mgr.latest_step()
        if step is None:
            return None
        try:
            out = self.mgr.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_tree(like)), meta=ocp.args.JsonRestore()))
        except Exception as e:
            raise ValueError(f"{self.root}/latest/{step}: cannot restore the SAE training "
                             f"state ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
                             ) from None
        tree, meta = out["state"], dict(out["meta"])
        if tree_digest(tree) != meta.get("sha256"):
            raise ValueError(f"{self.root}/latest/{step}: checkpoint data do not match their "
                             "recorded sha256 (the files are corrupt)")
        return tree, meta

    def close(self) -> None:
        self.mgr.wait_until_finished()
        self.mgr.close()


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
    import orbax.checkpoint as ocp

    path = path.absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    params = {k: np.asarray(v) for k, v in sae.params.items()}
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(tmp / "params", params)
        ckptr.wait_until_finished()
    write_json_atomic(tmp / SAE_FILE, {**meta, "sha256": tree_digest(params),
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
    import orbax.checkpoint as ocp

    rec_path = path / SAE_FILE
    if not rec_path.exists():
        raise ValueError(f"{path}: not an SAE folder (no {SAE_FILE})")
    rec = json.loads(rec_path.read_text())
    like = {k: jax.ShapeDtypeStruct(tuple(v), jnp.float32) for k, v in rec["shapes"].items()}

    try:
        with ocp.StandardCheckpointer() as ckptr:
            params = ckptr.restore(path.absolute() / "params", abstract_tree(like))
    except Exception as e:
        raise ValueError(f"{path}/params: cannot restore the SAE ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:200]})") from None
    if tree_digest(params) != rec.get("sha256"):
        raise ValueError(f"{path}: SAE parameters do not match their recorded sha256 (the files "
                         "are corrupt)")
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
        raise FileNotFoundError(f"{path}: no SAE folder or weights file here")
    else:
        arrays = _read_arrays(path)
    missing = [k for k in PARAM_KEYS if k not in arrays]
    if missing:
        raise ValueError(f"{path}: SAE file lacks {missing} (has {sorted(arrays)})")
    meta: dict[str, Any] = {}
    if "sae_meta" in arrays:
        meta = json.loads(bytes(arrays["sae_meta"]).decode())
    we, be, wd, bd = (np.asarray(arrays[k], np.float32) for k in PARAM_KEYS)
    if be.ndim != 1 or bd.ndim != 1:
        raise ValueError(f"{path}: b_enc and b_dec must be vectors, got {be.shape}, {bd.shape}")
    d, f = bd.shape[0], be.shape[0]
    if we.shape == (f, d) and we.shape != (d, f):
        we = we.T  # stored as (F, D) (torch Linear layout)
    if wd.shape == (d, f) and wd.shape != (f, d):
        wd = wd.T
    if we.shape != (d, f) or wd.shape != (f, d):
        raise ValueError(f"{path}: expected W_enc ({d}, {f}) and W_dec ({f}, {d}), got "
                         f"{we.shape} and {wd.shape}")
    params = {"W_enc": jnp.asarray(we), "b_enc": jnp.asarray(be), "W_dec": jnp.asarray(wd),
              "b_dec": jnp.asarray(bd)}
    return SAE(params,
               float(scale if scale is not None else meta.get("scale", 1.0)),
               bool(subtract_b_dec if subtract_b_dec is not None
                    else meta.get("subtract_b_dec", False)),
               meta.get("meta", {"source": str(path)}))
