"""`ssl-jax evaluate` as a function: cached maps + expert boxes → tidy metric tables.

Every map is upsampled to the heatmap size (bilinear, align_corners=False) and min-max
normalised (SPEC R2.7) before the metrics, as in the original. Per-head maps rank heads by
IoU@90 and coverage at a reduced size (`HEAD_SIZE`) — 12× more maps than the fused ones;
the reduced size is stated in every output that uses it.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..atomic import atomic_path
from ..attention.heatmap import to_heatmap
from ..data import BuildingParts, load_building_parts, rasterize, union_mask
from ..data.images import file_orientation, load_rgb, orient_array, orient_stack
from ..data.styles import STYLE_NAMES
from ..errors import UserError
from ..metrics import (
    alignment_metrics,
    center_gaussian,
    gaussian_target,
    iou_at_percentiles,
    random_maps,
    saliency_prior,
    sobel_edges,
    threshold_masks,
)
from ..metrics.alignment import coverage
from ..stats import bootstrap_ci
from .cache import open_existing, write_json_atomic
from .config import StudyConfig
from .dataset import dataset_root
from .manifest import write_manifest
from .progress import Progress

HEAD_SIZE = 56


def _metrics_fn(percentiles, tolerance):
    return jax.jit(lambda m, g, t: alignment_metrics(m, g, t, percentiles, tolerance))


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
        raise ValueError(f"{len(missing)} cached image(s) have no annotation, e.g. {missing[0]}")
    masks = np.stack([union_mask(ann.images[i].boxes, (size, size)) for i in image_ids])
    targets = np.stack([gaussian_target(ann.images[i].boxes, size, size) for i in image_ids])
    return orient_stack(masks, orientations), orient_stack(targets, orientations)


def run_evaluate(config: StudyConfig, cache_dir: str | Path, out_dir: str | Path, *,
                 progress: bool | None = None, log: Callable[[str], None] = print) -> dict:
    t_start = time.perf_counter()
    if config.preprocess != "squash":
        raise ValueError("evaluate supports squash preprocessing (SPEC decision 1): boxes and "
                         "maps then share the image frame")
    cache = open_existing(cache_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    root = dataset_root(config.dataset)
    ann = load_building_parts(root / "building_parts.json", clamp=config.clamp)
    ids = cache.image_ids
    size = config.heatmap_size
    turns = _orientations(root, ids, config.orientation, cache.settings)
    masks, targets = ground_truth(ann, ids, size, turns)
    styles = np.asarray([-1 if ann.images[i].style_label is None else ann.images[i].style_label
                         for i in ids])
    percentiles = tuple(config.percentiles)
    metric_fn = _metrics_fn(percentiles, config.pointing_tolerance)
    gt_j, tg_j = jnp.asarray(masks), jnp.asarray(targets)

    per_image: dict[tuple[str, str], dict[str, np.ndarray]] = {}  # (model, method) → (I, L)
    heads: dict[tuple[str, str], dict[str, np.ndarray]] = {}  # → (I, L, H)
    models = [m for m in config.models if cache.methods(m)]
    jobs = [(m, meth) for m in models for meth in cache.methods(m)]
    bar = Progress(len(jobs), "evaluate", enabled=progress)
    chunk = 4
    for model, method in jobs:
        maps = cache.read(model, method)
        if method.endswith("_heads"):
            small_gt = jnp.asarray(orient_stack(np.stack([union_mask(
                ann.images[i].boxes, (HEAD_SIZE, HEAD_SIZE)) for i in ids]), turns))
            vals = [_heads_metrics(to_heatmap(jnp.asarray(maps[s:s + chunk]),
                                              (HEAD_SIZE, HEAD_SIZE)),
                                   small_gt[s:s + chunk, None, None])
                    for s in range(0, len(ids), chunk)]
            heads[(model, method)] = {"iou@90": np.concatenate([np.asarray(v[0]) for v in vals]),
                                      "coverage": np.concatenate([np.asarray(v[1])
                                                                  for v in vals])}
        else:
            parts = [metric_fn(to_heatmap(jnp.asarray(maps[s:s + chunk]), (size, size)),
                               gt_j[s:s + chunk], tg_j[s:s + chunk])
                     for s in range(0, len(ids), chunk)]
            per_image[(model, method)] = {k: np.concatenate([np.asarray(p[k]) for p in parts])
                                          for k in parts[0]}
        bar.update()
    bar.close()

    # baselines: same metrics on maps that ignore the model
    key = jax.random.key(config.seed)
    base_maps = {"center_gaussian": np.broadcast_to(center_gaussian(size, size),
                                                    (len(ids), size, size)),
                 "saliency_prior": np.broadcast_to(saliency_prior(size, size),
                                                   (len(ids), size, size)),
                 "sobel_edges": np.stack([sobel_edges(_load_rgb(root, i, config.orientation),
                                                      size, size) for i in ids])}
    baselines = {name: {k: np.asarray(v) for k, v in metric_fn(jnp.asarray(m), gt_j,
                                                               tg_j).items()}
                 for name, m in base_maps.items()}
    rand = []
    for s in range(0, len(ids), chunk):
        r = random_maps(jax.random.fold_in(key, s), min(chunk, len(ids) - s),
                        config.n_random_trials, size, size)
        rand.append({k: np.asarray(v).mean(axis=1) for k, v in
                     metric_fn(r, gt_j[s:s + chunk], tg_j[s:s + chunk]).items()})
    baselines["random"] = {k: np.concatenate([r[k] for r in rand]) for k in rand[0]}

    # summary with bootstrap CIs: every (model, method, layer, metric) row in one call
    metric_names = [k for k in next(iter(per_image.values())) if k != "annotation_area"] \
        if per_image else []
    rows_meta, rows_vals = [], []
    for (model, method), vals in per_image.items():
        for layer in range(vals[metric_names[0]].shape[1]):
            for metric in metric_names:
                rows_meta.append((model, method, layer, metric))
                rows_vals.append(vals[metric][:, layer])
    for name, vals in baselines.items():
        for metric in metric_names:
            rows_meta.append(("baseline", name, -1, metric))
            rows_vals.append(vals[metric])
    boot_key = jax.random.fold_in(key, 10_000)
    mean, lo, hi = bootstrap_ci(np.stack(rows_vals), boot_key, n_resamples=config.n_bootstrap)
    summary = [{"model": m, "method": meth, "layer": layer, "metric": metric,
                "mean": float(mu), "ci_lo": float(a), "ci_hi": float(b), "n": len(ids)}
               for (m, meth, layer, metric), mu, a, b in zip(rows_meta, mean, lo, hi,
                                                             strict=True)]

    # per-image table (long in images, wide in metrics)
    image_rows = []
    for (model, method), vals in per_image.items():
        for layer in range(vals[metric_names[0]].shape[1]):
            for i, image_id in enumerate(ids):
                row = {"model": model, "method": method, "layer": layer,
                       "image_id": image_id,
                       "style": STYLE_NAMES[styles[i]] if styles[i] >= 0 else ""}
                row.update({k: float(vals[k][i, layer]) for k in metric_names})
                image_rows.append(row)
    head_rows = [{"model": model, "method": method, "layer": layer, "head": h,
                  "iou@90": float(v["iou@90"][:, layer, h].mean()),
                  "coverage": float(v["coverage"][:, layer, h].mean()), "size": HEAD_SIZE}
                 for (model, method), v in heads.items()
                 for layer in range(v["iou@90"].shape[1]) for h in range(v["iou@90"].shape[2])]

    best = best_layers(summary, "iou@90")
    style_rows, feature_rows = [], []
    for (model, method), layer in best.items():
        vals = per_image[(model, method)]
        for s, name in enumerate(STYLE_NAMES):
            sel = styles == s
            if sel.any():
                style_rows.append({"model": model, "method": method, "layer": layer,
                                   "style": name, "n": int(sel.sum()),
                                   **{k: float(vals[k][sel, layer].mean())
                                      for k in ("iou@90", "coverage", "pointing")}})
        heat = to_heatmap(jnp.asarray(cache.read(model, method)[:, layer]), (size, size))
        top = np.asarray(threshold_masks(heat, (90,)))[:, 0]  # (I, S, S)
        per_feature: dict[int, list[float]] = {}
        for i, image_id in enumerate(ids):
            a = ann.images[image_id]
            if a.num_boxes == 0:
                continue
            bm = orient_array(rasterize(a.boxes, (size, size)), turns[i])
            inter = (bm & top[i]).sum((1, 2))
            union = (bm | top[i]).sum((1, 2))
            for label, iou in zip(a.labels, inter / np.maximum(union, 1), strict=True):
                per_feature.setdefault(int(label), []).append(float(iou))
        for label, v in sorted(per_feature.items()):
            feature_rows.append({"model": model, "method": method, "layer": layer,
                                 "feature": _feature_name(ann, label), "label": label,
                                 "n_boxes": len(v), "box_iou@90": float(np.mean(v))})

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
    with atomic_path(out / "per_image_metrics.npz", suffix=".npz") as tmp:
        np.savez_compressed(tmp, image_ids=np.asarray(ids), styles=styles, **arrays)
    write_json_atomic(out / "best_layers.json",
                      {f"{m}/{meth}": layer for (m, meth), layer in best.items()})
    weights = {m: cache.model_info(m) or {} for m in models}
    return write_manifest(out / "evaluate_manifest.json", command="evaluate",
                          config=config.to_dict(), weights=weights,
                          seeds={"baselines_and_bootstrap": config.seed},
                          timings={"total": time.perf_counter() - t_start},
                          extra={"cache": str(cache_dir), "num_images": len(ids),
                                 "head_metrics_size": HEAD_SIZE})


def best_layers(summary: list[dict], metric: str) -> dict[tuple[str, str], int]:
    """Layer with the highest mean `metric` per (model, method) (ties: earliest layer)."""
    best: dict[tuple[str, str], tuple[float, int]] = {}
    for r in summary:
        if r["model"] == "baseline" or r["metric"] != metric:
            continue
        k = (r["model"], r["method"])
        if k not in best or r["mean"] > best[k][0]:
            best[k] = (r["mean"], r["layer"])
    return {k: v[1] for k, v in best.items()}


def _feature_name(ann: BuildingParts, label: int) -> str:
    try:
        return ann.feature_name(label)
    except (ValueError, IndexError):
        return str(label)


def _image_path(root: Path, image_id: str) -> Path:
    from .dataset import image_candidates

    for p in image_candidates(root / "images", image_id):
        if p.is_file():
            return p
    raise ValueError(f"image file for {image_id} not found in {root / 'images'}")


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
        raise ValueError(f"{path} does not exist; run `ssl-jax evaluate` first")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["layer"] = int(r["layer"])
        for k in ("mean", "ci_lo", "ci_hi"):
            r[k] = float(r[k])
    return rows


def load_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())
