"""The whole study in one call, each stage skipped when its inputs have not changed."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from ssl_jax.io.store import write_json_atomic
from ssl_jax.workflows.study.compare import run_compare
from ssl_jax.workflows.study.config import StudyConfig
from ssl_jax.workflows.study.dataset import study_images
from ssl_jax.workflows.study.evaluate import run_evaluate
from ssl_jax.workflows.study.report import run_report
from ssl_jax.workflows.study.run_extract import run_extract


def _fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _cache_state(cache: Path) -> list:
    """What the maps depend on: the cache's image list and every model's weights."""
    state = [json.loads((cache / "cache.json").read_text())]
    for info in sorted(cache.glob("*/model.json")):
        state.append(json.loads(info.read_text()))
    return state


def run_study(config: StudyConfig, out: Path, *, progress: bool | None = None) -> str:
    """extract → evaluate → compare → report under `out`; returns a one-paragraph summary."""
    t0 = time.perf_counter()
    cache, results = out / "cache", out / "results"
    report = results / "report"
    stamp_path = out / "stages.json"
    stamps = json.loads(stamp_path.read_text()) if stamp_path.exists() else {}
    ids, paths = study_images(config.dataset)
    ext = run_extract(config, cache, ids, paths, progress=progress)
    timings = {"extract": ext["timings_s"]["total"]}
    fp = _fingerprint(config.to_dict(), _cache_state(cache))
    if stamps.get("fingerprint") != fp:
        stamps = {"fingerprint": fp}
    fresh = True  # stays true while no stage had to run
    stages = (("evaluate", lambda: run_evaluate(config, cache, results, progress=progress),
               results / "summary.csv"),
              ("compare", lambda: run_compare(config, results), results / "compare.csv"),
              ("report", lambda: run_report(config, cache, results, report),
               report / "report.html"))
    for name, run, product in stages:
        if fresh and stamps.get(name) and product.exists():
            timings[name] = 0.0
            continue
        t = time.perf_counter()
        run()
        timings[name] = time.perf_counter() - t
        stamps[name] = True
        write_json_atomic(stamp_path, stamps)
        fresh = False  # later stages depend on this one
    total = time.perf_counter() - t0
    lines = [f"study '{config.name}': {len(ids)} images x {len(config.models)} models in "
             f"{total:.1f}s (" + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()) + ")",
             f"tables: {results}", f"report: {report / 'report.html'}"]
    if ext.get("random_weights"):
        lines.append(f"WARNING: {ext['warning']} (models: "
                     f"{', '.join(ext['random_weight_models'])})")
    return "\n".join(lines)
