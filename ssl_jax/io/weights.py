"""Which weights a command runs on: real checkpoints when they can be had, else (only when
allowed) random weights of the real architecture, loudly marked (`load_weights`, the one
place that decides; `resolve_model` is its study form)."""

from __future__ import annotations

import os
import sys
from typing import Any

from ssl_jax.core.errors import UserError
from ssl_jax.io.manifest import RANDOM_WEIGHTS_STAMP
from ssl_jax.io.runs import is_finetuned_run, load_finetuned
from ssl_jax.models import CheckpointError, random_model
from ssl_jax.models.checkpoint import tree_digest
from ssl_jax.models.families import MODELS
from ssl_jax.models.model import Model
from ssl_jax.models.model import load_model as load_checkpoint


class WeightsUnavailable(UserError):
    pass


def load_model(source: str | os.PathLike, **kwargs: Any) -> Model:
    """Load an encoder from an alias, a hub id, a local checkpoint folder or a fine-tuning
    run folder (its best checkpoint; `ssl_jax.io.runs.load_finetuned`). Keyword arguments
    go to `ssl_jax.models.load_model` (checkpoints) or `load_finetuned` (runs: dtype)."""
    if is_finetuned_run(source):
        return load_finetuned(source, **kwargs)
    return load_checkpoint(source, **kwargs)


def source_stamp(alias: str, source: str | None, *, allow_random: bool, seed: int) -> str:
    """A cheap identity of the weights a study would load, without loading them: the
    checkpoint folder's weight files (name, size, mtime) or the hub id, plus the random
    fallback settings. Equal stamps + a finished cache let a rerun skip loading."""
    from pathlib import Path

    src = source or alias
    parts = [alias, src, f"random_ok={allow_random}", f"seed={seed}"]
    folder = Path(src)
    if folder.is_dir():
        for f in sorted(folder.glob("*.safetensors*")) + sorted(folder.glob("*.bin")):
            st = f.stat()
            parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


def load_weights(source: str | os.PathLike, *, allow_random: bool = False, seed: int = 0,
                 alias: str | None = None, local_files_only: bool | None = True,
                 ) -> tuple[Model, dict[str, Any]]:
    """The one "load weights, else random": load `source` (alias, hub id, checkpoint folder
    or fine-tuning run folder); when its weights cannot be had and `allow_random`, random
    weights (key `seed`) of the architecture `alias` (default: `source` when it is an alias).
    Returns the model and a manifest entry whose "random" says which it is.

    Without `allow_random` a missing alias checkpoint is a `WeightsUnavailable` naming
    --allow-random-weights; a folder or hub id that cannot be loaded (no architecture to
    fall back on) raises its own `CheckpointError`."""
    alias = alias or (os.fspath(source) if os.fspath(source) in MODELS else None)
    try:
        # run folders take no hub options
        kwargs = {} if is_finetuned_run(source) else {"local_files_only": local_files_only}
        model = load_model(source, **kwargs)
        info: dict[str, Any] = {"source": model.source, "random": False}
    except (CheckpointError, OSError) as e:
        if alias is None:
            raise
        if not allow_random:
            raise WeightsUnavailable(
                f"no weights for {alias!r}: {e}. Download them into the Hugging Face cache, "
                "pass a checkpoint folder, or run with --allow-random-weights") from e
        model = random_model(alias, seed)
        info = {"source": f"random:{alias}", "random": True, "seed": seed,
                "reason": str(e), "warning": RANDOM_WEIGHTS_STAMP}
    return model, info


def resolve_model(alias: str, source: str | None = None, *, allow_random: bool = False,
                  seed: int = 0, local_files_only: bool = True) -> tuple[Model, dict[str, Any]]:
    """A study model: `source` (default: the alias's hub id, from the local cache only),
    else random weights of `alias` when `allow_random` (`load_weights`); the manifest entry
    also holds the weights' sha256 and size."""
    model, info = load_weights(source or alias, allow_random=allow_random, seed=seed,
                               alias=alias, local_files_only=local_files_only)
    info["params_sha256"] = tree_digest(model.params)
    info["num_params"] = model.num_params
    return model, info


def random_note(info: dict[str, Any]) -> str:
    """The one-line warning a command prints when `load_weights` fell back to random."""
    return (f"warning: using RANDOM weights for {info['source'].removeprefix('random:')} "
            f"({info['reason']}); not a scientific result")


def warn_random(aliases: list[str]) -> None:
    """The prominent warning printed when any model runs on random weights."""
    if not aliases:
        return
    bar = "!" * 78
    print(f"\n{bar}\n!! RANDOM WEIGHTS for {', '.join(aliases)}: real checkpoints are not "
          f"available here.\n!! Every table, figure and manifest is stamped "
          f"'{RANDOM_WEIGHTS_STAMP}'.\n{bar}\n", file=sys.stderr)
