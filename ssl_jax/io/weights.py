"""Which weights a study runs on: real checkpoints when they can be had, else (only when
allowed) random weights of the real architecture, loudly marked."""

from __future__ import annotations

import os
import sys
from typing import Any

from ssl_jax.core.errors import UserError
from ssl_jax.io.manifest import RANDOM_WEIGHTS_STAMP
from ssl_jax.io.runs import is_finetuned_run, load_finetuned
from ssl_jax.models import CheckpointError, random_model
from ssl_jax.models.checkpoint import tree_digest
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


def resolve_model(alias: str, source: str | None = None, *, allow_random: bool = False,
                  seed: int = 0, local_files_only: bool = True) -> tuple[Model, dict[str, Any]]:
    """Load `source` (default: the alias's hub id, from the local cache only) or fall back to
    random weights when `allow_random`. Returns the model and a manifest entry."""
    source = source or alias
    try:
        model = load_model(source, local_files_only=local_files_only)
        info = {"source": model.source, "random": False}
    except (CheckpointError, OSError) as e:
        if not allow_random:
            raise WeightsUnavailable(
                f"no weights for {alias!r}: {e}. Download them into the Hugging Face cache, "
                "pass a checkpoint folder, or run with --allow-random-weights") from None
        model = random_model(alias, seed)
        info = {"source": f"random:{alias}", "random": True, "seed": seed,
                "reason": str(e), "warning": RANDOM_WEIGHTS_STAMP}
    info["params_sha256"] = tree_digest(model.params)
    info["num_params"] = model.num_params
    return model, info


def warn_random(aliases: list[str]) -> None:
    """The prominent warning printed when any model runs on random weights."""
    if not aliases:
        return
    bar = "!" * 78
    print(f"\n{bar}\n!! RANDOM WEIGHTS for {', '.join(aliases)}: real checkpoints are not "
          f"available here.\n!! Every table, figure and manifest is stamped "
          f"'{RANDOM_WEIGHTS_STAMP}'.\n{bar}\n", file=sys.stderr)
