"""`ssl-jax extract` as a function: every model of a study → the map cache, resumable."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ssl_jax.attention.registry import applicable_methods
from ssl_jax.core.errors import UserError
from ssl_jax.core.progress import Progress
from ssl_jax.io.manifest import write_manifest
from ssl_jax.io.store import MapCache
from ssl_jax.io.weights import resolve_model, source_stamp, warn_random
from ssl_jax.models.config import bundled_spec
from ssl_jax.workflows.study.config import StudyConfig
from ssl_jax.workflows.study.extract import data_mesh, extract_model, load_image_file


def cache_settings(config: StudyConfig) -> dict[str, Any]:
    """The settings that decide the cached maps (a cache made with others is refused)."""
    return {"preprocess": config.preprocess, "input_size": config.input_size,
            "cache_dtype": config.cache_dtype, "dataset": config.dataset,
            **({"orientation": config.orientation} if config.orientation != "stored" else {})}


def run_extract(
    config: StudyConfig,
    cache_dir: str | Path,
    image_ids: Sequence[str],
    image_paths: Sequence[str | Path],
    *,
    progress: bool | None = None,
    stop_after_batches: int | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Extract maps of every model and method in `config` for the given images.

    Finished images are skipped, so an interrupted run continues where it stopped.
    `stop_after_batches` ends each model early (tests of interrupted runs).
    Returns the manifest (also written to <cache>/extract_manifest.json).
    """
    if not image_ids:
        raise UserError(f"dataset {config.dataset!r} has no annotated image: nothing to "
                        "extract or evaluate")
    if len(image_paths) != len(image_ids):
        raise ValueError(f"{len(image_ids)} image ids but {len(image_paths)} paths")
    root = Path(cache_dir)
    before = set(root.iterdir()) if root.is_dir() else None
    fresh = not (root / "cache.json").exists()
    cache = MapCache(cache_dir, image_ids, cache_settings(config))
    try:
        return _extract_all(config, cache, image_paths, progress=progress,
                            stop_after_batches=stop_after_batches, log=log)
    except BaseException:
        if fresh and not cache.holds_maps():
            _undo_creation(root, before)  # a failed first run leaves nothing that blocks
        raise


def _undo_creation(root: Path, before: set[Path] | None) -> None:
    """Remove what a first run that computed nothing created in the cache folder (its
    cache.json would refuse a corrected rerun with other settings)."""
    if before is None:
        shutil.rmtree(root, ignore_errors=True)
        return
    for p in set(root.iterdir()) - before:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def _extract_all(config: StudyConfig, cache: MapCache, image_paths: Sequence[str | Path], *,
                 progress: bool | None, stop_after_batches: int | None,
                 log: Callable[[str], None]) -> dict[str, Any]:
    cache_dir = cache.root
    mesh = data_mesh()
    weights: dict[str, dict[str, Any]] = {}
    timings: dict[str, float] = {}
    random_aliases = []
    t_all = time.perf_counter()
    for alias in config.models:
        spec = bundled_spec(alias)
        methods = applicable_methods(spec, config.methods)
        if not methods:
            log(f"{alias}: none of the methods {list(config.methods)} applies; skipped")
            continue
        t0 = time.perf_counter()
        stamp = source_stamp(alias, config.weights.get(alias),
                             allow_random=config.allow_random_weights, seed=config.seed)
        cached = cache.model_info(alias)
        if (cached and cached.get("source_stamp") == stamp
                and not cache.missing(alias, methods)):
            # nothing to compute and the same weights were used: skip loading them
            weights[alias] = cached
            if cached.get("random"):
                random_aliases.append(alias)
                warn_random([alias])
            timings[f"{alias}_total"] = time.perf_counter() - t0
            log(f"{alias}: 0 images computed, {cache.num_images} already cached")
            continue
        model, info = resolve_model(alias, config.weights.get(alias),
                                    allow_random=config.allow_random_weights, seed=config.seed)
        info["source_stamp"] = stamp
        if info["random"]:
            random_aliases.append(alias)
            warn_random([alias])
        # the methods asked of this model over every run (those cached stay valid)
        old = (cached or {}).get("methods", [])
        info["methods"] = [*old, *(m for m in methods if m not in old)]
        cache.set_model_info(alias, info)
        weights[alias] = info
        bar = Progress(cache.num_images, f"extract {alias}", unit="images", enabled=progress)
        stats, _ = extract_model(
            cache, alias, model, lambda i: load_image_file(image_paths[i], config.orientation),
            methods=methods,
            preprocess_mode=config.preprocess, input_size=config.input_size,
            batch_size=config.batch_size, cache_dtype=config.cache_dtype, mesh=mesh,
            progress=bar.update, stop_after_batches=stop_after_batches)
        bar.close()
        timings[f"{alias}_total"] = time.perf_counter() - t0
        timings[f"{alias}_first_batch_incl_compile"] = stats.compile_s
        timings[f"{alias}_steady"] = stats.run_s
        log(f"{alias}: {stats.computed} images computed, {stats.skipped} already cached "
            f"({timings[f'{alias}_total']:.1f}s)")
    timings["total"] = time.perf_counter() - t_all
    return write_manifest(
        Path(cache_dir) / "extract_manifest.json", command="extract",
        config=config.to_dict(), weights=weights, seeds={"random_weights": config.seed},
        timings=timings, extra={"devices": [str(d) for d in mesh.devices.flat],
                                "num_images": cache.num_images,
                                "random_weight_models": random_aliases})
