"""`ssl-jax evaluate` as a function: cached maps + expert boxes → tidy metric tables.

Every map is upsampled to the heatmap size (bilinear, align_corners=False) and min-max
normalised (SPEC R2.7) before the metrics, as in the original. Per-head maps rank heads by
IoU@90 and coverage at a reduced size (`HEAD_SIZE`) — 12× more maps than the fused ones;
the reduced size is stated in every output that uses it.

The metric columns are the fused grid's (`ssl_jax.metrics.registry.grid_columns`); per-style
means are `metrics.by_style` (first-style rule) and per-feature box IoU is `metrics.box_iou`
of the top-10 % mask against each box, aggregated by `metrics.by_feature` — NaN (degenerate
or missing maps) left out of every aggregate and counted (n_degenerate, n_missing).
"""

from __future__ import annotations

import csv
import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.attention.heatmap import to_heatmap
from ssl_jax.core.errors import MissingFileError, UserError
from ssl_jax.core.progress import Progress
from ssl_jax.core.styles import STYLE_NAMES
from ssl_jax.io.atomic import atomic_path
from ssl_jax.io.dataset import BuildingParts, dataset_root, load_building_parts, union_mask
from ssl_jax.io.images import file_orientation, load_rgb, orient_array, orient_stack
from ssl_jax.io.manifest import write_manifest
from ssl_jax.io.outdir import COMPARE_FILES, EVALUATE_FILES, REPORT_FOLDER, staged_folder
from ssl_jax.io.store import (
    IncompleteCacheError,
    MapCache,
    describe_missing,
    open_existing,
    write_json_atomic,
)
from ssl_jax.metrics import (
    alignment_grid,
    box_iou,
    by_feature,
    by_style,
    center_gaussian,
    coverage,
    gaussian_target,
    iou_at_percentiles,
    random_maps,
    saliency_prior,
    sobel_edges,
)
from ssl_jax.metrics.masks import batch_edges, edges_to_masks, mask_edges
from ssl_jax.metrics.registry import grid_columns
from ssl_jax.models.config import bundled_spec
from ssl_jax.stats import bootstrap_ci
from ssl_jax.workflows.study.config import StudyConfig
from ssl_jax.workflows.study.dataset import image_candidates
from ssl_jax.workflows.study.extract import applicable_methods

HEAD_SIZE = 56


@functools.lru_cache(maxsize=8)
def _metrics_fn(percentiles, tolerance):  # one compiled function per setting per process
    return jax.jit(lambda m, g, t: alignment_grid(m, g, t, percentiles, tolerance=tolerance))


@jax.jit
def _heads_metrics(maps, gt):
    iou, _, _ = iou_at_percentiles(maps, gt, (90,))
    return iou[..., 0], coverage(maps, gt)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)


def ground_truth(ann: BuildingParts, image_ids: list[str], size: int,
                 orientations: list[int] | None = None):
    """Union masks, Gaussian targets (I, S, S) and box lists in the squash frame (of the
    stored image, or turned by each image's EXIF `orientations`: `orient_stack`)."""
    missing = [i for i in image_ids if i not in ann.images]
    if missing:
        raise UserError(f"{len(missing)} cached image(s) have no annotation, e.g. {missing[0]}")
    masks = np.stack([union_mask(ann.images[i].boxes, (size, size)) for i in image_ids])
    targets = np.stack([gaussian_target(ann.images[i].boxes, size, size) for i in image_ids])
    return orient_stack(masks, orientations), orient_stack(targets, orientations)


def box_arrays(ann: BuildingParts, image_ids: list[str], size: int,
               orientations: list[int] | None = None):
    """Per-box edges (I, K, 4), validity (I, K) and feature labels (I, K) in the squash frame
    (padding: invalid, label −1). A box of an EXIF-turned image is its stored-frame mask
    turned (`orient_array`), as the union masks of `ground_truth`."""
    boxes = [ann.images[i].boxes for i in image_ids]
    edges, valid = batch_edges(boxes, (size, size))
    for i in np.flatnonzero(np.asarray(orientations if orientations else [], int) != 1):
        edges[i] = mask_edges(orient_array(edges_to_masks(edges[i], (size, size)),
                                           orientations[i]))
    labels = np.full(valid.shape, -1, np.int64)
    for i, image_id in enumerate(image_ids):
        lab = np.asarray(ann.images[image_id].labels, np.int64)
        labels[i, :lab.size] = lab
    return edges, valid, labels


def _nanmean(x: np.ndarray, axis=None) -> np.ndarray:
    """Mean of the finite values (NaN where there is none), without numpy's warning."""
    x = np.asarray(x, np.float64)
    ok = np.isfinite(x)
    n = ok.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(ok, x, 0.0).sum(axis=axis) / np.maximum(n, 1), np.nan)


def _counts(values: np.ndarray, missing: np.ndarray) -> dict[str, int]:
    """The n columns of an aggregate over images (leading axis of `values`): n (finite
    values used), n_degenerate (a present map whose metric is NaN: a degenerate map,
    ssl_jax.metrics), n_missing (not in the cache; only with --partial)."""
    finite = np.isfinite(values)
    return {"n": int(finite.sum()), "n_degenerate": int((~finite & ~missing).sum()),
            "n_missing": int(missing.sum())}


def required_maps(config: StudyConfig) -> list[tuple[str, str]]:
    """Every (model, method) a study's config asks for (methods a model lacks excluded)."""
    return [(m, meth) for m in config.models
            for meth in applicable_methods(bundled_spec(m), config.methods)]


def run_evaluate(config: StudyConfig, cache_dir: str | Path, out_dir: str | Path, *,
                 partial: bool = False, progress: bool | None = None,
                 log: Callable[[str], None] = print) -> dict:
    """Score the maps of every (model, method) of `config` in the cache.

    The cache must hold every image of every one of them (IncompleteCacheError naming what
    is missing otherwise); with `partial`, what exists is scored, the missing images are NaN
    in the per-image arrays, excluded from every aggregate and counted (n_missing) in every
    table, and the manifest lists them. The cache is opened read-only. The results folder is
    written as a unit (ssl_jax.io.outdir): a failure leaves the previous one whole.
    """
    t_start = time.perf_counter()
    if config.preprocess != "squash":
        raise UserError("evaluate supports squash preprocessing (SPEC decision 1): boxes and "
                        "maps then share the image frame")
    cache = open_existing(cache_dir, read_only=True)
    ids = cache.image_ids
    jobs = required_maps(config)
    have = {job: cache.complete(*job) for job in jobs}
    gaps = {job: ~c for job, c in have.items() if not c.all()}
    if gaps and not partial:
        raise IncompleteCacheError(
            f"cache {cache_dir} is incomplete: {describe_missing(cache, gaps)}; run "
            "`ssl-jax extract` with the same config to finish it, or pass --partial to "
            "evaluate what exists (stated in every output)")
    jobs = [job for job in jobs if have[job].any()]
    if not jobs:
        raise IncompleteCacheError(f"cache {cache_dir} holds no complete map of "
                                   f"{', '.join(config.models)}; run `ssl-jax extract`")
    if gaps:
        log(f"PARTIAL evaluation: {describe_missing(cache, gaps)} not in the cache")
    models = sorted({m for m, _ in jobs})
    weights = {m: cache.model_info(m) or {} for m in models}
    with staged_folder(out_dir, owned=EVALUATE_FILES + COMPARE_FILES + (REPORT_FOLDER,)) \
            as stage:
        extra = _evaluate(config, cache, jobs, have, gaps, stage, progress)
        # the manifest is part of the unit: it describes exactly the tables beside it
        return write_manifest(stage / "evaluate_manifest.json", command="evaluate",
                              config=config.to_dict(), weights=weights,
                              seeds={"baselines_and_bootstrap": config.seed},
                              timings={"total": time.perf_counter() - t_start},
                              extra={"cache": str(cache_dir), "num_images": len(ids),
                                     "head_metrics_size": HEAD_SIZE, **extra})


def _evaluate(config: StudyConfig, cache: MapCache, jobs: list[tuple[str, str]],
              have: dict[tuple[str, str], np.ndarray],
              gaps: dict[tuple[str, str], np.ndarray], out: Path,
              progress: bool | None) -> dict[str, Any]:
    root = dataset_root(config.dataset)
    ann = load_building_parts(root / "building_parts.json", clamp=config.clamp)
    ids = cache.image_ids
    n_img = len(ids)
    size = config.heatmap_size
    turns = _orientations(root, ids, config.orientation, cache.settings)
    masks, targets = ground_truth(ann, ids, size, turns)
    styles = np.asarray([-1 if ann.images[i].style_label is None else ann.images[i].style_label
                         for i in ids])
    percentiles = tuple(config.percentiles)
    metric_fn = _metrics_fn(percentiles, config.pointing_tolerance)
    gt_j, tg_j = jnp.asarray(masks), jnp.asarray(targets)
    missing = {job: ~have[job] for job in jobs}

    def scatter(parts: list[np.ndarray], idx: np.ndarray) -> np.ndarray:
        """Rows of the complete images `idx` → (num_images, ...), NaN where missing."""
        vals = np.concatenate(parts)
        full = np.full((n_img, *vals.shape[1:]), np.nan, np.float32)
        full[idx] = vals
        return full

    per_image: dict[tuple[str, str], dict[str, np.ndarray]] = {}  # (model, method) → (I, L)
    heads: dict[tuple[str, str], dict[str, np.ndarray]] = {}  # → (I, L, H)
    bar = Progress(len(jobs), "evaluate", unit="pairs", enabled=progress)
    chunk = 4
    for model, method in jobs:
        idx = np.flatnonzero(have[(model, method)])
        maps = cache.read(model, method, indices=idx)
        if method.endswith("_heads"):
            small_gt = jnp.asarray(orient_stack(np.stack([union_mask(
                ann.images[ids[i]].boxes, (HEAD_SIZE, HEAD_SIZE)) for i in idx]),
                [turns[i] for i in idx]))
            vals = [_heads_metrics(to_heatmap(jnp.asarray(maps[s:s + chunk]),
                                              (HEAD_SIZE, HEAD_SIZE)),
                                   small_gt[s:s + chunk, None, None])
                    for s in range(0, idx.size, chunk)]
            heads[(model, method)] = {
                "iou@90": scatter([np.asarray(v[0]) for v in vals], idx),
                "coverage": scatter([np.asarray(v[1]) for v in vals], idx)}
        else:
            gi, ti = gt_j[idx], tg_j[idx]
            parts = [metric_fn(to_heatmap(jnp.asarray(maps[s:s + chunk]), (size, size)),
                               gi[s:s + chunk], ti[s:s + chunk])
                     for s in range(0, idx.size, chunk)]
            per_image[(model, method)] = {k: scatter([np.asarray(p[k]) for p in parts], idx)
                                          for k in parts[0]}
        bar.update()
    bar.close()

    # baselines: same metrics on maps that ignore the model
    key = jax.random.key(config.seed)
    base_maps = {"center_gaussian": np.broadcast_to(center_gaussian(size, size),
                                                    (n_img, size, size)),
                 "saliency_prior": np.broadcast_to(saliency_prior(size, size),
                                                   (n_img, size, size)),
                 "sobel_edges": np.stack([sobel_edges(_load_rgb(root, i, config.orientation),
                                                      size, size) for i in ids])}
    baselines = {name: {k: np.asarray(v) for k, v in metric_fn(jnp.asarray(m), gt_j,
                                                               tg_j).items()}
                 for name, m in base_maps.items()}
    rand = []
    for s in range(0, n_img, chunk):
        r = random_maps(jax.random.fold_in(key, s), min(chunk, n_img - s),
                        config.n_random_trials, size, size)
        rand.append({k: _nanmean(np.asarray(v), axis=1) for k, v in
                     metric_fn(r, gt_j[s:s + chunk], tg_j[s:s + chunk]).items()})
    baselines["random"] = {k: np.concatenate([r[k] for r in rand]) for k in rand[0]}
    none_missing = np.zeros(n_img, bool)

    # summary with bootstrap CIs: every (model, method, layer, metric) row in one call; NaN
    # (degenerate or missing maps) is left out of each row's mean and resamples
    # the grid's metric columns, in the key-sorted order its jitted dict has always had
    metric_names = sorted(grid_columns(percentiles))
    rows_meta, rows_vals, rows_miss = [], [], []
    for (model, method), vals in per_image.items():
        for layer in range(vals[metric_names[0]].shape[1]):
            for metric in metric_names:
                rows_meta.append((model, method, layer, metric))
                rows_vals.append(vals[metric][:, layer])
                rows_miss.append(missing[(model, method)])
    for name, vals in baselines.items():
        for metric in metric_names:
            rows_meta.append(("baseline", name, -1, metric))
            rows_vals.append(vals[metric])
            rows_miss.append(none_missing)
    boot_key = jax.random.fold_in(key, 10_000)
    mean, lo, hi = bootstrap_ci(np.stack(rows_vals), boot_key, n_resamples=config.n_bootstrap)
    summary = [{"model": m, "method": meth, "layer": layer, "metric": metric,
                "mean": float(mu), "ci_lo": float(a), "ci_hi": float(b), **_counts(v, miss)}
               for (m, meth, layer, metric), mu, a, b, v, miss
               in zip(rows_meta, mean, lo, hi, rows_vals, rows_miss, strict=True)]

    # per-image table (long in images, wide in metrics); NaN stays NaN
    image_rows = []
    for (model, method), vals in per_image.items():
        miss = missing[(model, method)]
        for layer in range(vals[metric_names[0]].shape[1]):
            bad = np.zeros(n_img, bool)
            for k in metric_names:
                bad |= ~np.isfinite(vals[k][:, layer])
            for i, image_id in enumerate(ids):
                row = {"model": model, "method": method, "layer": layer,
                       "image_id": image_id,
                       "style": STYLE_NAMES[styles[i]] if styles[i] >= 0 else "",
                       "status": "missing" if miss[i] else "degenerate" if bad[i] else "ok"}
                row.update({k: float(vals[k][i, layer]) for k in metric_names})
                image_rows.append(row)
    head_rows = [{"model": model, "method": method, "layer": layer, "head": h,
                  "iou@90": float(_nanmean(v["iou@90"][:, layer, h])),
                  "coverage": float(_nanmean(v["coverage"][:, layer, h])), "size": HEAD_SIZE,
                  **_counts(v["iou@90"][:, layer, h], missing[(model, method)])}
                 for (model, method), v in heads.items()
                 for layer in range(v["iou@90"].shape[1]) for h in range(v["iou@90"].shape[2])]

    best = best_layers(summary, "iou@90")
    style_rows, feature_rows = [], []
    edges, valid, labels = box_arrays(ann, ids, size, turns)
    n_labels = int(labels[valid].max()) + 1 if valid.any() else 0
    has_label = ((labels[..., None] == np.arange(n_labels)) & valid[..., None]).any(axis=1)
    n_styles = len(STYLE_NAMES)
    styled = styles >= 0
    style_images = np.bincount(styles[styled], minlength=n_styles)
    for (model, method), layer in best.items():
        vals = per_image[(model, method)]
        miss = missing[(model, method)]
        # per style (first-style rule): NaN (degenerate, missing) is left out and counted
        st = {k: by_style(vals[k][:, layer], styles, n_styles)
              for k in ("iou@90", "coverage", "pointing")}
        style_missing = np.bincount(styles[styled & miss], minlength=n_styles)
        for s, name in enumerate(STYLE_NAMES):
            if style_images[s]:
                n_used = int(st["iou@90"].count[s])
                style_rows.append({"model": model, "method": method, "layer": layer,
                                   "style": name, "n": n_used,
                                   "n_degenerate": int(style_images[s]) - n_used
                                   - int(style_missing[s]),
                                   "n_missing": int(style_missing[s]),
                                   **{k: float(v.mean[s]) for k, v in st.items()}})
        if not n_labels:  # no image has a box
            continue
        # per-box IoU: only images whose map is present and not degenerate
        usable = np.isfinite(vals["iou@90"][:, layer])
        use = np.flatnonzero(usable)
        box = np.full(valid.shape, np.nan, np.float32)
        if use.size:
            heat = to_heatmap(jnp.asarray(cache.read(model, method, indices=use)[:, layer]),
                              (size, size))
            for start in range(0, use.size, chunk):  # box masks: chunk × K × S² pixels
                sel = use[start:start + chunk]
                box[sel] = np.asarray(box_iou(heat[start:start + chunk], edges[sel],
                                              valid[sel], (90,)))[:, 0]
        feats = by_feature(box, labels, valid, n_labels)
        unused = has_label & ~usable[:, None]  # images with a box of the label, left out
        n_deg = (unused & ~miss[:, None]).sum(axis=0)
        n_miss = (unused & miss[:, None]).sum(axis=0)
        for label in np.flatnonzero(has_label.any(axis=0)):
            feature_rows.append({"model": model, "method": method, "layer": layer,
                                 "feature": _feature_name(ann, int(label)),
                                 "label": int(label), "n_boxes": int(feats.count[label]),
                                 "box_iou@90": float(feats.mean[label]),
                                 "n_degenerate": int(n_deg[label]),
                                 "n_missing": int(n_miss[label])})

    _write_csv(out / "summary.csv", summary)
    _write_csv(out / "per_image.csv", image_rows)
    if head_rows:
        _write_csv(out / "heads.csv", head_rows)
    _write_csv(out / "by_style.csv", style_rows)
    _write_csv(out / "by_feature.csv", feature_rows)
    arrays = {f"{m}/{meth}/{k}": v for (m, meth), vals in per_image.items()
              for k, v in vals.items()}
    arrays.update({f"baseline/{b}/{k}": v for b, vals in baselines.items()
                   for k, v in vals.items()})
    arrays.update({f"missing/{m}/{meth}": miss for (m, meth), miss in missing.items()})
    with atomic_path(out / "per_image_metrics.npz", suffix=".npz") as tmp:
        np.savez_compressed(tmp, image_ids=np.asarray(ids), styles=styles, **arrays)
    write_json_atomic(out / "best_layers.json",
                      {f"{m}/{meth}": layer for (m, meth), layer in best.items()})
    shown = {f"{m}/{meth}": {"count": int(g.sum()),
                             "image_ids": [ids[i] for i in np.flatnonzero(g)]}
             for (m, meth), g in gaps.items()}
    return {"partial": bool(gaps), "missing": shown,
            **({"warning_partial": f"PARTIAL: maps missing from the cache "
                                   f"({describe_missing(cache, gaps)}); aggregates use "
                                   "the images present (see n_missing)"} if gaps else {})}


def best_layers(summary: list[dict], metric: str) -> dict[tuple[str, str], int]:
    """Layer with the highest mean `metric` per (model, method) (ties: earliest layer)."""
    best: dict[tuple[str, str], tuple[float, int]] = {}
    for r in summary:
        if r["model"] == "baseline" or r["metric"] != metric:
            continue
        k = (r["model"], r["method"])
        mean = r["mean"] if np.isfinite(r["mean"]) else -np.inf  # no finite value: last
        if k not in best or mean > best[k][0]:
            best[k] = (mean, r["layer"])
    return {k: v[1] for k, v in best.items()}


def _feature_name(ann: BuildingParts, label: int) -> str:
    try:
        return ann.feature_name(label)
    except (ValueError, IndexError):
        return str(label)


def _image_path(root: Path, image_id: str) -> Path:

    for p in image_candidates(root / "images", image_id):
        if p.is_file():
            return p
    raise MissingFileError(f"image file for {image_id} not found in {root / 'images'}")


def _load_rgb(root: Path, image_id: str, orientation: str = "stored") -> np.ndarray:
    return load_rgb(_image_path(root, image_id), orientation=orientation)


def _orientations(root: Path, ids: list[str], orientation: str,
                  cache_settings: dict[str, Any]) -> list[int]:
    """Each image's EXIF orientation tag under `orientation` (all 1 for "stored"); refuses a
    cache whose maps were extracted in the other frame."""
    cached = cache_settings.get("orientation", "stored")
    if cached != orientation:
        raise UserError(f"the cache was extracted with orientation = {cached!r} but the study "
                        f"config says {orientation!r}: maps and boxes would be in different "
                        "frames; use the same setting for extract and evaluate")
    return [file_orientation(_image_path(root, i), orientation) for i in ids]


def read_summary(out_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(out_dir) / "summary.csv"
    if not path.exists():
        raise UserError(f"{path} does not exist; run `ssl-jax evaluate` first")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["layer"] = int(r["layer"])
        for k in ("mean", "ci_lo", "ci_hi"):
            r[k] = float(r[k])
    return rows


def load_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())
