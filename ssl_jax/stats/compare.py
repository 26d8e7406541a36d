"""Paired comparisons as one family, all-pairs model comparison and ranking with bootstrap
CIs (SPEC R4.5 ``compare_all_models`` / ``rank_models``).

`compare_pairs` is the one place where a family of paired comparisons is made: for every
pair (a, b) of a family the paired test of a − b (`inference.paired_comparison`: pairs with a
non-finite side dropped, auto t-test / Wilcoxon), a bootstrap CI of the mean difference, and
the multiple-comparison correction (Holm by default) over exactly the pairs given — the family
is explicit and named in every result. The study's `compare` and the attention `shift` call
it; `compare_all_models` is the all-pairs family over a dict of models.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
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
    significant: bool  # p_corrected < alpha
    mean_diff: float  # mean of the finite differences a − b (float64, the test's)
    effect_dz: float
    n: int  # pairs with both sides finite
    ci_lo: float
    ci_hi: float
    shapiro_p: float | None
    family: str
    ci_mean: float = math.nan  # the bootstrap's statistic on the data (float32 mean)


def compare_pairs(values: Mapping[str, object], pairs: Sequence[tuple[str, str]], *,
                  family: str, key: jax.Array | Sequence[jax.Array] | None = None,
                  test: str = "auto", correction: str = "holm", alpha: float = 0.05,
                  n_resamples: int = 10_000, confidence: float = 0.95) -> list[Comparison]:
    """One family of paired comparisons: `values[a]` vs `values[b]` for every (a, b) of
    `pairs` (1-D paired samples, a − b), corrected over exactly these pairs; `family` names
    the family in every result.

    Bootstrap CIs of the mean difference (NaN pairs dropped by weighting): `key` a single
    key — one vectorised call, the same resamples for every pair of the family; a sequence
    of keys, one per pair — each pair's own draws; None — no CIs (NaN). The differences are
    taken in the dtype of the values given.
    """
    pairs = [tuple(p) for p in pairs]
    if not pairs:
        raise ValueError(f"family {family!r} has no pairs")
    unknown = sorted({n for p in pairs for n in p} - set(values))
    if unknown:
        raise ValueError(f"family {family!r} names samples that are not given: {unknown}")
    res = [paired_comparison(values[a], values[b], test) for a, b in pairs]
    adjusted, significant = correct([r.p_value for r in res], correction, alpha)
    diffs = [np.asarray(values[a]) - np.asarray(values[b]) for a, b in pairs]
    boot = {"n_resamples": n_resamples, "confidence": confidence}
    if key is None:
        point = lo = hi = np.full(len(pairs), np.nan)
    elif isinstance(key, (list, tuple)):
        if len(key) != len(pairs):
            raise ValueError(f"{len(key)} keys for {len(pairs)} pairs of family {family!r}")
        cis = [bootstrap_ci(d, k, **boot) for d, k in zip(diffs, key, strict=True)]
        point, lo, hi = (np.concatenate(x) for x in zip(*cis, strict=True))
    else:
        point, lo, hi = bootstrap_ci(np.stack(diffs), key, **boot)
    return [Comparison(a, b, r.test, r.statistic, r.p_value, r.log10_p, float(p), bool(g),
                       r.mean_diff, r.effect_dz, r.n, float(lo_), float(hi_), r.shapiro_p,
                       family, float(mu))
            for (a, b), r, p, g, mu, lo_, hi_
            in zip(pairs, res, adjusted, significant, point, lo, hi, strict=True)]


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
    """Every pair (a, b), a < b in sorted names, as one family (`compare_pairs`); with
    `key`, a paired-bootstrap CI of the mean difference for every pair from one vectorised
    call (NaN CIs without a key)."""
    s = _scores(scores)
    names = sorted(s)
    pairs = list(itertools.combinations(names, 2))
    res = compare_pairs(s, pairs, family=f"{correction} over {len(pairs)} pairs of "
                                         f"{len(names)} models",
                        key=key, test=test, correction=correction, alpha=alpha,
                        n_resamples=n_resamples, confidence=confidence)
    return {(c.a, c.b): c for c in res}


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
