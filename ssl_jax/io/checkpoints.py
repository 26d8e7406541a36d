"""Every orbax checkpoint the package writes or reads goes through this wrapper.

Two shapes:
- `CheckpointSeries(folder)`: numbered steps (an orbax CheckpointManager, newest step kept,
  written synchronously); each step holds a pytree and JSON metadata carrying the tree's
  sha256. Fine-tuning runs (latest / best) and resumable SAE training use it.
- `save_tree` / `restore_tree`: one pytree in one folder (orbax StandardCheckpointer); the
  caller keeps its sha256 in its own record (the run record, sae.json).

Restoring checks the sha256 of what came back, so corruption that orbax itself would read
without complaint is still caught. Every failure is a `CheckpointError` (a `UserError`)
naming the folder and what did not match.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.models.checkpoint import tree_digest
from ssl_jax.models.convert import CheckpointError


def _ocp():
    import orbax.checkpoint as ocp  # heavy; only when a checkpoint is touched

    return ocp


def abstract_tree(tree):
    """Restore targets on this process's first device: a tree checkpointed on N devices (or
    a GPU) restores anywhere; callers re-shard after loading."""
    one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x),
                                                       sharding=one), tree)


def _why(e: BaseException) -> str:
    """`Type: first line of the message` of an error orbax raised."""
    s = str(e).strip()
    return f"{type(e).__name__}: {s.splitlines()[0][:300] if s else ''}"


def _corrupt(where: Path, what: str) -> CheckpointError:
    return CheckpointError(f"{where}: {what} data do not match their recorded sha256 (the "
                           "files are corrupt)")


class CheckpointSeries:
    """Numbered checkpoints of one pytree + JSON metadata in `folder` (newest kept).

    `what` names them in messages ("latest checkpoint"); `written_by` says what a structure
    mismatch means ("by a different model/strategy"); with `best_metric`, orbax keeps the
    step with the highest value of that metric instead of the newest."""

    def __init__(self, folder: str | os.PathLike, *, what: str,
                 written_by: str = "for a different structure", create: bool = True,
                 best_metric: str | None = None):
        ocp = _ocp()
        self.folder = Path(folder).absolute()
        self.what, self.written_by = what, written_by
        opts: dict[str, Any] = dict(max_to_keep=1, create=create,
                                    enable_async_checkpointing=False)
        if best_metric is not None:
            opts.update(best_fn=lambda m: m[best_metric], best_mode="max")
        try:
            self._mgr = ocp.CheckpointManager(self.folder,
                                              options=ocp.CheckpointManagerOptions(**opts))
        except Exception as e:  # orbax raises many types; all mean "not readable"
            raise CheckpointError(f"{self.folder}: cannot open the {what}s ({_why(e)})") from e

    def all_steps(self) -> list[int]:
        return list(self._mgr.all_steps())

    def latest_step(self) -> int | None:
        return self._mgr.latest_step()

    def save(self, step: int, tree, meta: dict[str, Any], *,
             metrics: dict[str, float] | None = None) -> None:
        """Write step `step` (a step already there is left as it is)."""
        ocp = _ocp()
        if step in self._mgr.all_steps():
            return
        meta = {**meta, "sha256": tree_digest(tree)}
        self._mgr.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)),
            **({} if metrics is None else {"metrics": metrics}))

    def restore(self, like) -> tuple[int, Any, dict] | None:
        """(step, tree, meta) of the newest step, or None if there is none. `like` is an
        example tree of the expected structure (arrays or shape structs)."""
        ocp = _ocp()
        step = self._mgr.latest_step()
        if step is None:
            return None
        where = self.folder / str(step)
        try:
            out = self._mgr.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_tree(like)), meta=ocp.args.JsonRestore()))
            tree, meta = out["state"], dict(out["meta"])
        except Exception as e:  # orbax raises many types; all mean "not readable"
            raise CheckpointError(f"{where}: cannot restore the {self.what} — it is corrupt or "
                                  f"was written {self.written_by} ({_why(e)})") from e
        if meta.get("sha256") is None or tree_digest(tree) != meta["sha256"]:
            raise _corrupt(where, "checkpoint")
        return step, tree, meta

    def close(self) -> None:
        self._mgr.wait_until_finished()
        self._mgr.close()


def save_tree(folder: str | os.PathLike, tree) -> str:
    """Write `tree` as one orbax checkpoint folder (which must not exist); returns its
    sha256 for the caller's record."""
    ocp = _ocp()
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(Path(folder).absolute(), tree)
        ckptr.wait_until_finished()
    return tree_digest(tree)


def restore_tree(folder: str | os.PathLike, like, *, sha256: str | None, what: str):
    """Read the tree `save_tree` wrote, shaped like `like`; checks it against `sha256`
    (None: the record has none)."""
    ocp = _ocp()
    folder = Path(folder).absolute()
    try:
        with ocp.StandardCheckpointer() as ckptr:
            tree = ckptr.restore(folder, abstract_tree(like))
    except Exception as e:  # orbax raises many types; all mean "not readable"
        raise CheckpointError(f"{folder}: cannot restore the {what} ({_why(e)})") from e
    if sha256 is not None and tree_digest(tree) != sha256:
        raise _corrupt(folder, what)
    return tree
