"""`ssl-jax report` as a function: figures (PNG) + one self-contained HTML page."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from ssl_jax.attention.heatmap import to_heatmap
from ssl_jax.figures.study import (
    comparison_bars,
    grouped_bars,
    head_grid,
    layer_progression,
    overlay_grid,
)
from ssl_jax.io.dataset import dataset_root, load_annotations
from ssl_jax.io.html import table, write_report
from ssl_jax.io.images import file_orientation, orient_boxes
from ssl_jax.io.manifest import RANDOM_WEIGHTS_STAMP, write_manifest
from ssl_jax.io.outdir import staged_folder
from ssl_jax.io.store import open_existing
from ssl_jax.workflows.study.compare import primary_labels
from ssl_jax.workflows.study.config import StudyConfig
from ssl_jax.workflows.study.evaluate import _image_path, _load_rgb, read_summary


def _csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


REPORT_FILES = ("report.html", "report_manifest.json")


def run_report(config: StudyConfig, cache_dir: str | Path, results_dir: str | Path,
               out_dir: str | Path | None = None, *, overlay_images: int = 4) -> dict[str, Any]:
    """The report folder is written as a unit (ssl_jax.io.outdir); the cache is read
    read-only."""
    results = Path(results_dir)
    out = Path(out_dir) if out_dir is not None else results / "report"
    summary = read_summary(results)  # (a missing results folder is named before anything)
    with staged_folder(out, owned=REPORT_FILES, any_owned=lambda n: n.endswith(".png")) \
            as stage:
        m = _report(config, cache_dir, results, summary, stage, overlay_images)
        m["extra"]["html"] = str(out / "report.html")  # where it will be after the swap
        return write_manifest(stage / "report_manifest.json", **m)


def _report(config: StudyConfig, cache_dir: str | Path, results: Path, summary: list[dict],
            out: Path, overlay_images: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    best = json.loads((results / "best_layers.json").read_text())
    ev_manifest = json.loads((results / "evaluate_manifest.json").read_text())
    random_weights = bool(ev_manifest.get("random_weights"))
    stamp = RANDOM_WEIGHTS_STAMP if random_weights else None
    partial = ev_manifest.get("warning_partial") if ev_manifest.get("partial") else None
    figs: list[tuple[str, list]] = []

    # 1. layer progression of IoU@90 and coverage, per model/method, with CI bands
    items = []
    for metric in ("iou@90", "coverage"):
        series: dict[str, dict[str, np.ndarray]] = {}
        for label in sorted(best):
            model, method = label.split("/")
            rows = sorted((r for r in summary if r["model"] == model and r["method"] == method
                           and r["metric"] == metric), key=lambda r: r["layer"])
            if rows:
                series[label] = {"layer": np.array([r["layer"] for r in rows]),
                                 **{k: np.array([r[k] for r in rows])
                                    for k in ("mean", "ci_lo", "ci_hi")}}
                series[label]["lo"], series[label]["hi"] = (series[label]["ci_lo"],
                                                            series[label]["ci_hi"])
        png = layer_progression(series, out / f"layers_{metric.replace('@', '')}.png",
                                metric=metric, stamp=stamp)
        items.append(("figure", (png, f"{metric} at every layer; bands: 95% bootstrap CI "
                                      f"over {ev_manifest.get('num_images')} images.")))
    figs.append(("Layer progression", items))

    # 2. model comparison at each model's best layer, baselines as lines
    items = []
    for metric in ("iou@90", "coverage", "pointing"):
        labels, mean, lo, hi = [], [], [], []
        for label, layer in sorted(best.items()):
            model, method = label.split("/")
            r = next(r for r in summary if r["model"] == model and r["method"] == method
                     and r["layer"] == layer and r["metric"] == metric)
            labels.append(f"{label} (L{layer})")
            mean.append(r["mean"])
            lo.append(r["ci_lo"])
            hi.append(r["ci_hi"])
        base = {r["method"]: r["mean"] for r in summary
                if r["model"] == "baseline" and r["metric"] == metric}
        png = comparison_bars(labels, np.array(mean), np.array(lo), np.array(hi),
                              out / f"models_{metric.replace('@', '')}.png", metric=metric,
                              baselines=base, stamp=stamp,
                              title=f"{metric} at each model's best layer (by IoU@90)")
        items.append(("figure", (png, f"{metric}: mean and 95% bootstrap CI; dashed lines: "
                                      "baselines.")))
    figs.append(("Models compared", items))

    # 3. overlays: a few images, every model at its best layer
    cache = open_existing(cache_dir, read_only=True)
    root = dataset_root(config.dataset)
    ann = load_annotations(root / "building_parts.json", clamp=config.clamp)
    ids = cache.image_ids
    size = config.heatmap_size
    labels = primary_labels(best)
    # overlays of images every shown map is present for (all of them unless --partial)
    present = np.ones(len(ids), bool)
    for lbl in labels:
        present &= cache.complete(*lbl.split("/"))
    pool = np.flatnonzero(present)
    chosen = pool[np.linspace(0, len(pool) - 1, min(overlay_images, len(pool))).astype(int)]
    heat = {lbl: np.asarray(to_heatmap(jnp.asarray(
        cache.read(*lbl.split("/"), indices=chosen)[:, best[lbl]]), (size, size)))
        for lbl in labels}
    images, maps_rows, boxes = [], [], []
    from PIL import Image

    for j, i in enumerate(chosen):
        frame = cache.settings.get("orientation", "stored")  # the cached maps' frame
        rgb = Image.fromarray(_load_rgb(root, ids[i], frame)).resize((size, size), Image.BILINEAR)
        images.append(np.asarray(rgb))
        maps_rows.append([heat[lbl][j] for lbl in labels])
        b = ann[ids[i]].boxes if ids[i] in ann else np.zeros((0, 4))
        boxes.append(_boxes_px(orient_boxes(b, file_orientation(_image_path(root, ids[i]),
                                                                frame)), size))
    png = overlay_grid(images, maps_rows, boxes, [ids[i] for i in chosen],
                       [f"{lbl} L{best[lbl]}" for lbl in labels], out / "overlays.png",
                       stamp=stamp, title="Attention at each model's best layer; green: "
                                          "expert boxes")
    figs.append(("Heatmaps and expert boxes", [("figure", (png, "Min-max normalised maps "
                                                                "over the squashed image."))]))

    # 4. per-head grids
    head_rows = _csv(results / "heads.csv")
    if head_rows:
        grids: dict[str, np.ndarray] = {}
        for r in head_rows:
            key = f"{r['model']}/{r['method']}"
            grids.setdefault(key, {})[(int(r["layer"]), int(r["head"]))] = float(r["iou@90"])
        mats = {}
        for k, d in grids.items():
            n_l = max(a for a, _ in d) + 1
            n_h = max(b for _, b in d) + 1
            m = np.full((n_l, n_h), np.nan)
            for (a, b), v in d.items():
                m[a, b] = v
            mats[k] = m
        png = head_grid(mats, out / "heads_iou90.png", metric="IoU@90", stamp=stamp)
        figs.append(("Heads", [("figure", (png, f"Per-head IoU@90 (maps at "
                                                f"{head_rows[0]['size']} px) by layer and "
                                                "head."))]))

    # 5. style and feature-type breakdowns
    items = []
    style_rows = _csv(results / "by_style.csv")
    if style_rows:
        styles = sorted({r["style"] for r in style_rows})
        series = {}
        for r in style_rows:
            series.setdefault(f"{r['model']}/{r['method']}", {})[r["style"]] = float(
                r["iou@90"])
        png = grouped_bars(styles, {k: np.array([v.get(s, np.nan) for s in styles])
                                    for k, v in series.items()},
                           out / "styles_iou90.png", metric="IoU@90",
                           title="IoU@90 by architectural style (best layer)", stamp=stamp)
        items.append(("figure", (png, "Mean IoU@90 per style.")))
    feature_rows = _csv(results / "by_feature.csv")
    if feature_rows:
        feats = sorted({r["feature"] for r in feature_rows})
        series = {}
        for r in feature_rows:
            series.setdefault(f"{r['model']}/{r['method']}", {})[r["feature"]] = float(
                r["box_iou@90"])
        png = grouped_bars(feats, {k: np.array([v.get(f, np.nan) for f in feats])
                                   for k, v in series.items()},
                           out / "features_iou90.png", metric="box IoU@90",
                           title="Per-box IoU@90 by feature type (best layer)", stamp=stamp)
        items.append(("figure", (png, "Each expert box against the top-10% mask.")))
    if items:
        figs.append(("Styles and feature types", items))

    # 6. tables: best layers and the comparison tests
    best_rows = []
    for label, layer in sorted(best.items()):
        model, method = label.split("/")
        row: dict[str, Any] = {"model/method": label, "best layer": layer}
        for metric in ("iou@90", "coverage", "pointing", "mse", "kl"):
            r = next((r for r in summary if r["model"] == model and r["method"] == method
                      and r["layer"] == layer and r["metric"] == metric), None)
            if r:
                row[metric] = r["mean"]
        best_rows.append(row)
    tables = [("table", table(best_rows, ["model/method", "best layer", "iou@90", "coverage",
                                          "pointing", "mse", "kl"]))]
    cmp_rows = _csv(results / "compare.csv")
    if cmp_rows:
        shown = [dict(r, mean_diff=float(r["mean_diff"]), p_holm=float(r["p_holm"]),
                      d_z=float(r["d_z"])) for r in cmp_rows
                 if r["metric"] == "iou@90" and r["family"] != "methods"]
        tables.append(("text", "Paired comparisons of IoU@90 (Holm within each family):"))
        tables.append(("table", table(shown, ["family", "a", "b", "mean_diff", "test",
                                              "p_holm", "d_z", "significant"])))
    figs.insert(0, ("Summary", tables))

    subtitle = (f"study '{config.name}': {ev_manifest.get('num_images')} images, models "
                f"{', '.join(config.models)}, preprocessing {config.preprocess} "
                f"{config.input_size}px")
    html_path = write_report(out / "report.html", title="ssl_jax attention-alignment report",
                             subtitle=subtitle,
                             warning=" · ".join(w for w in (stamp, partial) if w) or None,
                             sections=figs)
    pngs = sorted(p.name for p in out.glob("*.png"))
    return {"command": "report", "config": config.to_dict(),
            "weights": ev_manifest.get("weights", {}), "seeds": {},
            "timings": {"total": time.perf_counter() - t0},
            "extra": {"html": str(html_path), "figures": pngs,
                      "partial": bool(partial), "missing": ev_manifest.get("missing", {})}}


def _boxes_px(boxes: np.ndarray, size: int) -> np.ndarray:
    """Fractional (left, top, right, bottom) → pixel corners in a size×size frame."""
    return np.asarray(boxes, np.float64).reshape(-1, 4) * size
