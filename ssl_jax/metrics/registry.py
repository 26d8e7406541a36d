"""The metric registry: every per-map metric in one place (Quantus-style) — its name, the
function that defines it, whether higher or lower is better, what it needs beyond the map,
and the value it takes where it is not defined.

Needs (`NEEDS`): "mask" (the union mask of the expert boxes, (I, H, W) bool), "target" (the
soft Gaussian target, `continuous.gaussian_targets`), "boxes" (per-box edges (I, K, 4) with
validity (I, K)), "percentile" (a threshold: one column per percentile, ``<name>@<p>``),
"tolerance" (pixels of slack around the mask or box).

Undefined values. A degenerate map (`alignment.degenerate`: any non-finite value, no positive
mass, or constant) gives NaN in every metric here. An image without boxes (an empty mask)
gives `Metric.empty`: 0.0 (IoU, coverage, pointing, top-k pointing, mass Jaccard: nothing
is inside), NaN (relevance mass and rank accuracy, ROC-AUC: undefined, skipped by NaN-aware
means; box metrics: no box), or None for the target metrics, which score the map against the
all-zero target of such an image (uniform for KL and EMD) as the original did. Box metrics
are NaN for padding boxes.

Every metric is called the same way, `Metric.compute(maps, mask=…, target=…, edges=…,
valid=…, percentile=…, tolerance=…)` → one value per map (box metrics: (..., K)), which is
what the fused grid (`grid.alignment_grid`, the metrics marked `in_grid`) computes for many
maps at once with the same per-map kernels. Users: the grid (its columns and their order,
`grid_columns`), evaluate (which metric columns the study tables have), compare and shift
(the direction of "better"), the figures (axis labels, `axis_label`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ssl_jax.metrics.alignment import (
    box_iou,
    box_pointing,
    coverage,
    iou,
    pointing_hit,
    top_k_pointing,
)
from ssl_jax.metrics.continuous import emd, kl_target_attention, mse
from ssl_jax.metrics.localisation import (
    mass_jaccard,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
    roc_auc,
)

NEEDS = frozenset({"mask", "target", "boxes", "percentile", "tolerance"})


@dataclass(frozen=True)
class Metric:
    name: str  # the column name, ``<name>@<p>`` for each percentile when it needs one
    function: Callable  # the public function that defines it
    higher_is_better: bool
    needs: frozenset[str]
    empty: float | None  # value for an image without boxes; None: scored against the zero target
    label: str  # for axes and tables
    in_grid: bool = False  # computed by the fused grid (`grid.alignment_grid`)
    host: bool = False  # computed on the host (not jit-able)

    @property
    def better(self) -> str:
        return "higher" if self.higher_is_better else "lower"

    @property
    def per_percentile(self) -> bool:
        return "percentile" in self.needs

    def column(self, percentile: float | None = None) -> str:
        """The table column: the name, with ``@<p>`` for a per-percentile metric."""
        if self.per_percentile:
            if percentile is None:
                raise ValueError(f"metric {self.name!r} needs a percentile")
            return f"{self.name}@{float(percentile):g}"
        if percentile is not None:
            raise ValueError(f"metric {self.name!r} takes no percentile, got {percentile}")
        return self.name

    def compute(self, maps, *, mask=None, target=None, edges=None, valid=None,
                percentile: float | None = None, tolerance: int = 0) -> Any:
        """The metric of every map (..., H, W) (box metrics: maps (I, ..., H, W) → (I, ...,
        K)); masks and targets broadcast against the maps."""
        given = {"mask": mask, "target": target, "boxes": edges, "percentile": percentile}
        lacking = sorted(k for k, v in given.items() if k in self.needs and v is None)
        if "boxes" in self.needs and valid is None:
            lacking.append("valid")
        if lacking:
            raise ValueError(f"metric {self.name!r} needs {', '.join(lacking)}")
        return _COMPUTE[self.name](maps, mask=mask, target=target, edges=edges, valid=valid,
                                   percentile=percentile, tolerance=tolerance)


def _m(name, function, higher, needs, empty, label, **kw) -> Metric:
    return Metric(name, function, higher, frozenset(needs), empty, label, **kw)


_NAN = float("nan")
# the order of `grid_columns` (the grid's outputs are a jitted dict: they come back key-sorted)
METRICS: dict[str, Metric] = {m.name: m for m in (
    _m("iou", iou, True, {"mask", "percentile"}, 0.0, "IoU", in_grid=True),
    _m("coverage", coverage, True, {"mask"}, 0.0, "coverage", in_grid=True),
    _m("pointing", pointing_hit, True, {"mask", "tolerance"}, 0.0, "pointing game",
       in_grid=True),
    _m("mse", mse, False, {"target"}, None, "MSE to the soft target", in_grid=True),
    _m("kl", kl_target_attention, False, {"target"}, None, "KL(target ‖ attention)",
       in_grid=True),
    _m("emd", emd, False, {"target"}, None, "EMD to the soft target", host=True),
    _m("box_iou", box_iou, True, {"boxes", "percentile"}, _NAN, "per-box IoU"),
    _m("box_pointing", box_pointing, True, {"boxes", "tolerance"}, _NAN, "per-box pointing"),
    _m("top_k_pointing", top_k_pointing, True, {"mask", "tolerance"}, 0.0,
       "top-5 pixels inside"),
    _m("relevance_mass_accuracy", relevance_mass_accuracy, True, {"mask"}, _NAN,
       "relevance mass accuracy"),
    _m("relevance_rank_accuracy", relevance_rank_accuracy, True, {"mask"}, _NAN,
       "relevance rank accuracy"),
    _m("roc_auc", roc_auc, True, {"mask"}, _NAN, "ROC-AUC"),
    _m("mass_jaccard", mass_jaccard, True, {"mask"}, 0.0, "Jaccard of the 60 % mass mask"),
)}

_COMPUTE: dict[str, Callable] = {
    "iou": lambda m, *, mask, percentile, **_: iou(m, mask, percentile),
    "coverage": lambda m, *, mask, **_: coverage(m, mask),
    "pointing": lambda m, *, mask, tolerance, **_: pointing_hit(m, mask, tolerance),
    "mse": lambda m, *, target, **_: mse(m, target),
    "kl": lambda m, *, target, **_: kl_target_attention(m, target),
    "emd": lambda m, *, target, **_: emd(m, target),
    "box_iou": lambda m, *, edges, valid, percentile, **_: box_iou(
        m, edges, valid, (percentile,))[..., 0, :],
    "box_pointing": lambda m, *, edges, valid, tolerance, **_: box_pointing(
        m, edges, valid, tolerance),
    "top_k_pointing": lambda m, *, mask, tolerance, **_: top_k_pointing(
        m, mask, 5, tolerance),
    "relevance_mass_accuracy": lambda m, *, mask, **_: relevance_mass_accuracy(m, mask),
    "relevance_rank_accuracy": lambda m, *, mask, **_: relevance_rank_accuracy(m, mask),
    "roc_auc": lambda m, *, mask, **_: roc_auc(m, mask),
    "mass_jaccard": lambda m, *, mask, **_: mass_jaccard(m, mask),
}
assert set(_COMPUTE) == set(METRICS)


def parse_column(column: str) -> tuple[Metric, float | None]:
    """A table column ("iou@90", "coverage", "box_iou@90") → (its metric, its percentile or
    None); an unknown name is a ValueError naming the known ones."""
    name, at, pct = column.partition("@")
    metric = METRICS.get(name)
    if metric is None or bool(at) != metric.per_percentile:
        known = ", ".join(f"{m.name}@<p>" if m.per_percentile else m.name
                          for m in METRICS.values())
        raise ValueError(f"unknown metric column {column!r}; known: {known}")
    if not at:
        return metric, None
    try:
        p = float(pct)
    except ValueError:
        raise ValueError(f"metric column {column!r}: {pct!r} is not a percentile") from None
    if not np.isfinite(p) or not 0 <= p <= 100:
        raise ValueError(f"metric column {column!r}: percentile outside [0, 100]")
    return metric, p


def metric_of(column: str) -> Metric:
    """The metric a table column belongs to (see `parse_column`)."""
    return parse_column(column)[0]


def higher_is_better(column: str) -> bool:
    return metric_of(column).higher_is_better


def better(column: str) -> str:
    """"higher" or "lower": which way a column's values are better."""
    return metric_of(column).better


def axis_label(column: str) -> str:
    """A column's axis label with its direction ("IoU@90 (higher is better)"); a name that is
    not a metric column is returned as given."""
    try:
        metric, p = parse_column(column)
    except ValueError:
        return column
    name = metric.label if p is None else f"{metric.label}@{p:g}"
    return f"{name} ({metric.better} is better)"


def grid_metrics(with_target: bool = True) -> tuple[Metric, ...]:
    """The metrics the fused grid computes, in its column order (those that need the soft
    target only `with_target`)."""
    return tuple(m for m in METRICS.values()
                 if m.in_grid and (with_target or "target" not in m.needs))


def grid_columns(percentiles, with_target: bool = True) -> tuple[str, ...]:
    """The grid's metric columns (registry order; one per percentile for per-percentile
    metrics)."""
    pct = np.atleast_1d(np.asarray(percentiles, np.float64)).tolist()
    return tuple(c for m in grid_metrics(with_target)
                 for c in ([m.column(p) for p in pct] if m.per_percentile else [m.column()]))
