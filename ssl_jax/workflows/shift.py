"""The attention shift: frozen vs fine-tuned maps on the annotated images (study question 2).

For each fine-tuning run, the frozen backbone (the run's own `base/`) and the fine-tuned one
(LoRA merged) map every annotated image (squash frame, the run's input size) at one layer
with the model's default method (ssl_jax.attention.registry: CLS attention; SigLIP: mean
attention), as heatmaps upsampled to `size` and min-max normalised. Every metric of `ssl_jax.metrics` is computed
per image for both; per run and metric: mean Δ = fine-tuned − frozen with a paired bootstrap
CI, the paired test (auto: t-test or Wilcoxon by Shapiro-Wilk, named per row), d_z, and Holm
across the model × strategy family (all runs given, per metric). Figures: side-by-side
heatmaps, difference maps, per-style and per-feature Δ.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.attention.heatmap import to_heatmap
from ssl_jax.attention.registry import default_method, map_method, method_maps
from ssl_jax.core.batching import padded_batches
from ssl_jax.core.errors import UserError
from ssl_jax.core.styles import STYLE_NAMES
from ssl_jax.core.validate import RULES, OptionError, check, check_all
from ssl_jax.figures.study import overlay_grid
from ssl_jax.io.dataset import load_dataset, load_image, union_mask
from ssl_jax.io.manifest import RANDOM_WEIGHTS_STAMP
from ssl_jax.io.runs import load_classifier, read_run, restore_base, write_json
from ssl_jax.metrics import alignment_grid, emd, gaussian_target
from ssl_jax.metrics.registry import better
from ssl_jax.models.families import MODELS
from ssl_jax.models.model import Model
from ssl_jax.models.preprocess import preprocess
from ssl_jax.models.spec import ModelSpec
from ssl_jax.stats import compare_pairs
from ssl_jax.workflows.study.evaluate import _write_csv

PRIMARY = "iou@90"


def check_layer(layer: int, num_layers: int, where: str = "") -> int:
    """`layer` as an index in [0, num_layers) (negative: from the end); any other value is an
    OptionError — never wrapped around to some other layer."""
    check("layer", layer, RULES["layer"])
    if not -num_layers <= layer < num_layers:
        raise OptionError(f"layer {layer} is out of range for {where or 'a model'} with "
                          f"{num_layers} layers (use {-num_layers}..{num_layers - 1})")
    return layer % num_layers


@functools.partial(jax.jit, static_argnames=("spec", "layer", "method", "size"))
def _heatmaps(params, pixels, *, spec: ModelSpec, layer: int, method: str, size: int):
    maps = method_maps(spec, params, pixels, (method,), layer=layer)[method]
    return to_heatmap(maps, (size, size))


def heatmaps(model: Model, pixels: np.ndarray, *, layer: int = -1, method: str | None = None,
             size: int = 224, batch_size: int = 8) -> np.ndarray:
    """(N, size, size) min-max heatmaps of one layer, in fixed padded batches."""
    spec = model.spec
    layer = check_layer(layer, spec.num_layers, model.source)
    method = method or default_method(spec)
    if map_method(method).per_head or not map_method(method).applies_to(spec):
        raise ValueError(f"heatmaps need a head-fused map method {spec.family} has, got {method!r}")
    out = [np.asarray(_heatmaps(model.params, jnp.asarray(pixels[idx]), spec=spec, layer=layer,
                                method=method, size=size))[:k]
           for idx, k in padded_batches(np.arange(len(pixels)), batch_size)]
    return np.concatenate(out)


@dataclass
class RunShift:
    label: str  # "<model> <strategy>"
    image_ids: list[str]
    frozen: dict[str, np.ndarray]  # metric -> (N,)
    finetuned: dict[str, np.ndarray]
    heatmaps_frozen: np.ndarray
    heatmaps_finetuned: np.ndarray
    styles: list[tuple[int, ...]]
    features: list[tuple[int, ...]]


def run_shift(run_dir: str | Path, dataset, *, layer: int = -1, size: int = 224,
              percentiles: Sequence[float] = (90, 50), with_emd: bool = True,
              batch_size: int = 8) -> RunShift:
    """Per-image metrics of the frozen and the fine-tuned model of one run."""
    clf = load_classifier(run_dir)
    ft = clf.model
    base = Model(params=restore_base(Path(run_dir), ft.spec, clf.record.get("base_sha256")),
                 spec=ft.spec, source=f"{run_dir}#base")
    input_size = tuple(clf.record["training"]["input_size"])
    anns = dataset.annotated()
    if not anns:
        raise UserError(f"dataset {dataset.root} has no annotated images")
    pixels, _ = preprocess(ft, [load_image(a.path) for a in anns], mode="squash",
                           size=input_size)
    h_frozen = heatmaps(base, pixels, layer=layer, size=size, batch_size=batch_size)
    h_ft = heatmaps(ft, pixels, layer=layer, size=size, batch_size=batch_size)
    masks = np.stack([union_mask(a.boxes, (size, size)) for a in anns])
    targets = np.stack([gaussian_target(a.boxes, size, size) for a in anns])
    both = np.stack([h_frozen, h_ft], axis=1)  # (N, 2, S, S)
    grid = {k: np.asarray(v) for k, v in
            alignment_grid(both, masks, targets, tuple(percentiles)).items()}
    grid.pop("annotation_area", None)
    if with_emd:
        grid["emd"] = np.asarray(emd(both, targets[:, None]))
    strategy = clf.record["training"]["strategy"]
    label = f"{_model_name(clf.record)} {strategy}"
    return RunShift(label, [a.image_id for a in anns], {k: v[:, 0] for k, v in grid.items()},
                    {k: v[:, 1] for k, v in grid.items()}, h_frozen, h_ft,
                    [tuple(a.style_labels) for a in anns],
                    [tuple(sorted(set(int(x) for x in a.labels))) for a in anns])


def _model_name(record: dict) -> str:

    src = str(record.get("source", ""))
    for alias, info in MODELS.items():
        if src in (alias, f"random:{alias}", info.hub_id) or info.hub_id in src:
            return alias
    return record["spec"]["family"]


def shift_table(shifts: Sequence[RunShift], *, n_resamples: int = 10_000, seed: int = 42,
                test: str = "auto") -> list[dict]:
    """One row per run × metric: frozen/fine-tuned means, Δ with paired bootstrap CI, the
    paired test, d_z, raw p and Holm p across the runs (the model × strategy family: one
    `compare_pairs` call per metric; each row's CI from its own key)."""
    key = jax.random.key(seed)
    found = {}
    for metric in dict.fromkeys(m for s in shifts for m in s.frozen):
        runs = [i for i, s in enumerate(shifts) if metric in s.frozen]
        values = {}
        for i in runs:  # the difference in float64, as the paired bootstrap always took it
            values[f"{i}/finetuned"] = np.asarray(shifts[i].finetuned[metric], np.float64)
            values[f"{i}/frozen"] = np.asarray(shifts[i].frozen[metric], np.float64)
        keys = [jax.random.fold_in(jax.random.fold_in(key, i), list(shifts[i].frozen).index(
            metric)) for i in runs]
        family = compare_pairs(values, [(f"{i}/finetuned", f"{i}/frozen") for i in runs],
                               family=f"{metric}: {len(runs)} model x strategy rows",
                               key=keys, test=test, n_resamples=n_resamples)
        found.update({(i, metric): c for i, c in zip(runs, family, strict=True)})
    rows = []
    for i, s in enumerate(shifts):
        for metric in s.frozen:
            a, b = s.finetuned[metric], s.frozen[metric]
            c = found[(i, metric)]
            rows.append({
                "run": s.label, "metric": metric, "n": c.n,
                "frozen_mean": float(np.mean(b)), "finetuned_mean": float(np.mean(a)),
                "delta": float(np.mean(a - b)), "ci_lo": c.ci_lo, "ci_hi": c.ci_hi,
                "test": c.test, "p": c.p_value, "d_z": c.effect_dz, "better": better(metric),
                "p_holm": c.p_corrected, "holm_family": c.family,
                "significant": c.significant,
            })
    return rows


def breakdowns(s: RunShift, metric: str = PRIMARY, feature_names=None) -> dict:
    """Mean Δ per style (an image counts under each of its styles) and per feature label (an
    image counts under each label among its boxes)."""
    d = s.finetuned[metric] - s.frozen[metric]

    def group(keys_per_image, name):
        out: dict[str, dict] = {}
        for keys, v in zip(keys_per_image, d, strict=True):
            for k in keys:
                e = out.setdefault(name(k), {"n": 0, "sum": 0.0})
                e["n"] += 1
                e["sum"] += float(v)
        return {k: {"n": e["n"], "delta": e["sum"] / e["n"]} for k, e in sorted(out.items())}

    return {"metric": metric,
            "style": group(s.styles, lambda k: STYLE_NAMES[k]),
            "feature": group(s.features, lambda k: feature_names(k) if feature_names else str(k))}


def shift_figures(s: RunShift, dataset, out_dir: Path, *, size: int = 224, n_images: int = 6,
                  metric: str = PRIMARY, stamp: str | None = None) -> list[Path]:
    """Side-by-side heatmaps, difference maps and per-style / per-feature Δ bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    tag = s.label.replace(" ", "_")
    anns = {a.image_id: a for a in dataset.annotated()}
    ids = s.image_ids[:n_images]
    images = [np.asarray(load_image(anns[i].path).resize((size, size))) for i in ids]
    boxes = [anns[i].boxes * size for i in ids]
    paths = [overlay_grid(images, [[s.heatmaps_frozen[k], s.heatmaps_finetuned[k]]
                                   for k in range(len(ids))], boxes, ids,
                          ["frozen", "fine-tuned"], out_dir / f"{tag}_side_by_side.png",
                          stamp=stamp, title=f"{s.label}: frozen vs fine-tuned")]
    fig, axes = plt.subplots(1, len(ids), figsize=(2.2 * len(ids), 2.4), squeeze=False)
    for k, ax in enumerate(axes[0]):
        diff = s.heatmaps_finetuned[k] - s.heatmaps_frozen[k]
        ax.imshow(images[k], alpha=0.4)
        im = ax.imshow(diff, cmap="RdBu_r", vmin=-1, vmax=1, alpha=0.75)
        for x0, y0, x1, y1 in boxes[k]:
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False,
                                       edgecolor="k", linewidth=1))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(ids[k], fontsize=7)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="fine-tuned − frozen")
    fig.suptitle(f"{s.label}: attention shift")
    paths.append(_save(fig, out_dir / f"{tag}_difference.png", stamp))
    br = breakdowns(s, metric, getattr(dataset.building_parts, "feature_name", None))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
    for ax, kind in zip(axes, ("style", "feature"), strict=True):
        names = list(br[kind])
        vals = [br[kind][n]["delta"] for n in names]
        ax.bar(range(len(names)), vals, color=["#2ca02c" if v >= 0 else "#d62728" for v in vals])
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
        ax.axhline(0, color="k", linewidth=0.8)
        ax.set_title(f"Δ {metric} by {kind}")
    fig.suptitle(s.label)
    paths.append(_save(fig, out_dir / f"{tag}_breakdown.png", stamp))
    return paths


def _save(fig, path: Path, stamp: str | None) -> Path:
    import matplotlib.pyplot as plt

    if stamp:
        fig.text(0.01, 0.005, stamp, ha="left", va="bottom", fontsize=8, color="red")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def shift(run_dirs: Sequence[str | Path], dataset_dir, out_dir: str | Path, *, layer: int = -1,
          size: int = 224, percentiles: Sequence[float] = (90, 50), with_emd: bool = True,
          n_resamples: int = 10_000, seed: int = 42, figures: bool = True,
          log=print) -> dict:
    """Frozen vs fine-tuned attention for every run; writes shift.json, shift.csv, figures."""
    # every setting checked before any work or file: layer against each run's model
    check("size", size, RULES["size"])
    percentiles = check_all("percentiles", percentiles, RULES["percentile"])
    check("n_resamples", n_resamples, RULES["resamples"])
    check("seed", seed, RULES["seed"])
    for r in run_dirs:
        check_layer(layer, int(read_run(r)["spec"]["num_layers"]), str(r))
    ds = load_dataset(dataset_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shifts = []
    stamp = None
    for r in run_dirs:
        s = run_shift(r, ds, layer=layer, size=size, percentiles=percentiles, with_emd=with_emd)
        rec = json.loads((Path(r) / "finetune_run.json").read_text())
        if str(rec.get("source", "")).startswith("random:"):

            stamp = RANDOM_WEIGHTS_STAMP
        log(f"{s.label}: {len(s.image_ids)} annotated images")
        shifts.append(s)
    rows = shift_table(shifts, n_resamples=n_resamples, seed=seed)
    feature_name = getattr(ds.building_parts, "feature_name", None)
    result = {
        "runs": [str(Path(r).absolute()) for r in run_dirs], "layer": layer, "size": size,
        "percentiles": list(percentiles), "seed": seed, "n_resamples": n_resamples,
        "rows": rows, "breakdowns": {s.label: breakdowns(s, PRIMARY, feature_name)
                                     for s in shifts},
        "per_image": {s.label: {"image_ids": s.image_ids,
                                "frozen": {k: v.tolist() for k, v in s.frozen.items()},
                                "finetuned": {k: v.tolist() for k, v in s.finetuned.items()}}
                      for s in shifts},
    }
    if stamp:
        result["warning"] = stamp
    write_json(out / "shift.json", result)
    _write_csv(out / "shift.csv", rows)
    if figures:
        result["figures"] = [str(p) for s in shifts
                             for p in shift_figures(s, ds, out / "figures", size=size,
                                                    stamp=stamp)]
    return result
