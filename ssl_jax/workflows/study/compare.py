"""`ssl-jax compare` as a function: paired statistics between models (each at its best
layer), between each model's methods, and of every model against the baselines, with
bootstrap CIs of the mean difference and Holm-corrected p-values per family — each family
one `ssl_jax.stats.compare_pairs` call. Which way each metric is better (the metric
registry) is stated in the manifest."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ssl_jax.attention.registry import preferred_method
from ssl_jax.core.errors import UserError
from ssl_jax.io.manifest import write_manifest
from ssl_jax.io.outdir import COMPARE_FILES, EVALUATE_FILES, REPORT_FOLDER, staged_folder
from ssl_jax.metrics.registry import better, metric_of
from ssl_jax.stats import compare_pairs
from ssl_jax.workflows.study.config import StudyConfig
from ssl_jax.workflows.study.evaluate import _write_csv


def _load(results: Path) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    npz, best = results / "per_image_metrics.npz", results / "best_layers.json"
    if not npz.exists() or not best.exists():
        raise UserError(f"{results} has no evaluation results; run `ssl-jax evaluate` first")
    with np.load(npz) as f:
        arrays = {k: f[k] for k in f.files}
    return arrays, json.loads(best.read_text())


def primary_labels(labels) -> list[str]:
    """One "model/method" per model: its default map among those it has
    (ssl_jax.attention.registry: CLS attention, or mean attention for SigLIP)."""
    by_model: dict[str, list[str]] = {}
    for label in sorted(labels):
        model, method = label.split("/")
        by_model.setdefault(model, []).append(method)
    return [f"{model}/{preferred_method(methods)}" for model, methods in by_model.items()]


def _check_metric(metric: str, arrays: dict[str, np.ndarray]) -> None:
    """A metric to compare must be a registry column that evaluate wrote."""
    try:
        metric_of(metric)
    except ValueError as e:
        raise UserError(str(e)) from None
    have = sorted({k.rsplit("/", 1)[1] for k in arrays
                   if k.count("/") == 2 and not k.startswith("missing/")})
    if metric not in have:
        raise UserError(f"metric {metric!r} is not in the evaluation results; they have "
                        f"{', '.join(have)}")


def run_compare(config: StudyConfig, results_dir: str | Path, *,
                metrics: tuple[str, ...] = ("iou@90", "coverage", "kl"),
                test: str = "auto") -> dict[str, Any]:
    t0 = time.perf_counter()
    results = Path(results_dir)
    arrays, best = _load(results)
    key = jax.random.key(config.seed + 1)

    def values(label: str, metric: str) -> np.ndarray:
        model, method = label.split("/")
        if model == "baseline":
            return arrays[f"baseline/{method}/{metric}"]
        return arrays[f"{label}/{metric}"][:, best[label]]

    families: dict[str, list[tuple[str, str]]] = {}
    labels = sorted(best)
    model_labels = primary_labels(labels)
    families["models"] = list(itertools.combinations(sorted(model_labels), 2))
    by_model: dict[str, list[str]] = {}
    for label in labels:
        by_model.setdefault(label.split("/")[0], []).append(label)
    families["methods"] = [pair for ls in by_model.values()
                           for pair in itertools.combinations(ls, 2)]
    baselines = sorted({k.split("/")[1] for k in arrays if k.startswith("baseline/")})
    families["vs_baselines"] = [(m, f"baseline/{b}") for m in sorted(model_labels)
                                for b in baselines]

    def absent(label: str) -> np.ndarray:
        key = f"missing/{label}"
        return arrays[key].astype(bool) if key in arrays else np.zeros(n_img, bool)

    n_img = len(arrays["image_ids"])
    for metric in metrics:
        _check_metric(metric, arrays)
    rows: list[dict[str, Any]] = []
    for metric in metrics:
        for family, pairs in families.items():
            if not pairs:
                continue
            # a pair with a NaN side (degenerate or missing map) is dropped from the test
            # and from the bootstrap of the mean difference, and counted
            vals = {label: values(label, metric) for pair in pairs for label in pair}
            for c in compare_pairs(vals, pairs, family=f"{metric}/{family} ({len(pairs)} tests)",
                                   key=jax.random.fold_in(key, len(rows)), test=test,
                                   n_resamples=config.n_bootstrap):
                d = vals[c.a] - vals[c.b]
                g = absent(c.a) | absent(c.b)
                rows.append({"metric": metric, "family": family, "a": c.a, "b": c.b,
                             "layer_a": best.get(c.a, -1), "layer_b": best.get(c.b, -1),
                             "mean_diff": c.ci_mean, "ci_lo": c.ci_lo, "ci_hi": c.ci_hi,
                             "test": c.test, "statistic": c.statistic, "p": c.p_value,
                             "p_holm": c.p_corrected, "significant": c.significant,
                             "d_z": c.effect_dz, "n": c.n,
                             "n_degenerate": int((~np.isfinite(d) & ~g).sum()),
                             "n_missing": int(g.sum()), "holm_family": c.family})
    ev = json.loads((results / "evaluate_manifest.json").read_text())
    # the results folder is rewritten as a unit: evaluate's files carried over, compare's
    # new, a report made from the old comparison dropped
    with staged_folder(results, keep=EVALUATE_FILES,
                       owned=(*COMPARE_FILES, REPORT_FOLDER)) as stage:
        _write_csv(stage / "compare.csv", rows)
        return write_manifest(stage / "compare_manifest.json", command="compare",
                              config=config.to_dict(), weights=ev.get("weights", {}),
                              seeds={"bootstrap": config.seed + 1},
                              timings={"total": time.perf_counter() - t0},
                              extra={"tests": len(rows), "best_layers": best,
                                     "better": {m: better(m) for m in metrics},
                                     "partial": bool(ev.get("partial")),
                                     "missing": ev.get("missing", {})})
