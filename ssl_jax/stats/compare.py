"""All-pairs model comparison and ranking with bootstrap CIs (SPEC R4.5
``compare_all_models`` / ``rank_models``), with the correction family stated in every row."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass

import jax
import numpy as np

from ssl_jax.stats.bootstrap import bootstrap_ci
from ssl_jax.stats.inference import correct, paired_comparison


@dataclass(frozen=True)
class Comparison:
    a: str
    b: str
    test: str
    statistic: float
    p_value: float
    log10_p: float
    p_corrected: float
    significant: bool
    mean_diff: float
    effect_dz: float
    n: int
    ci_lo: float
    ci_hi: float
    shapiro_p: float | None
    family: str


@dataclass(frozen=True)
class Ranked:
    rank: int
    name: str
    mean: float
    lo: float
    hi: float
    n: int


def _scores(scores: Mapping[str, object]) -> dict[str, np.ndarray]:
    if len(scores) < 2:
        raise ValueError(f"need at least two models to compare, got {list(scores)}")
    out = {k: np.asarray(v, np.float64) for k, v in scores.items()}
    shapes = {k: v.shape for k, v in out.items()}
    if len(set(shapes.values())) != 1 or next(iter(shapes.values())).__len__() != 1:
        raise ValueError(f"paired scores must be 1-D of one length per model, got {shapes}")
    return out


def compare_all_models(scores: Mapping[str, object], test: str = "auto",
                       correction: str = "holm", *, key: jax.Array | None = None,
                       n_resamples: int = 10_000, alpha: float = 0.05,
                       confidence: float = 0.95) -> dict[tuple[str, str], Comparison]:
    """Every pair (a, b), a < b in sorted names, compared with `paired_comparison` and
    corrected as one family; with `key`, a paired-bootstrap CI of the mean difference for
    every pair from one vectorised call (NaN CIs without a key)."""
    s = _scores(scores)
    names = sorted(s)
    pairs = list(itertools.combinations(names, 2))
    res = [paired_comparison(s[a], s[b], test) for a, b in pairs]
    adj, sig = correct([r.p_value for r in res], correction, alpha)
    if key is not None:
        diffs = np.stack([s[a] - s[b] for a, b in pairs])
        ci = bootstrap_ci(diffs, key, n_resamples=n_resamples, confidence=confidence)
        lo, hi = ci.lo, ci.hi
    else:
        lo = hi = np.full(len(pairs), np.nan)
    family = f"{correction} over {len(pairs)} pairs of {len(names)} models"
    return {(a, b): Comparison(a, b, r.test, r.statistic, r.p_value, r.log10_p, float(p),
                               bool(g), r.mean_diff, r.effect_dz, r.n, float(lo_), float(hi_),
                               r.shapiro_p, family)
            for (a, b), r, p, g, lo_, hi_ in zip(pairs, res, adj, sig, lo, hi, strict=True)}


def rank_models(scores: Mapping[str, object], key: jax.Array, *, n_resamples: int = 10_000,
                confidence: float = 0.95, higher_is_better: bool = True) -> list[Ranked]:
    """Models by mean score (descending if higher is better) with bootstrap CIs of the mean
    (one call, shared resamples; NaN scores skipped). Models may have different lengths."""
    if not scores:
        raise ValueError("no models to rank")
    names = list(scores)
    arrs = [np.asarray(scores[k], np.float64).reshape(-1) for k in names]
    n = max(a.size for a in arrs)
    mat = np.full((len(arrs), n), np.nan)
    for i, a in enumerate(arrs):
        mat[i, :a.size] = a
    ci = bootstrap_ci(mat, key, n_resamples=n_resamples, confidence=confidence)
    order = np.argsort(-ci.point if higher_is_better else ci.point, kind="stable")
    return [Ranked(r + 1, names[i], float(ci.point[i]), float(ci.lo[i]), float(ci.hi[i]),
                   int(np.isfinite(arrs[i]).sum())) for r, i in enumerate(order)]
