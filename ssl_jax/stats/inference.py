"""Paired tests, effect sizes and multiple-comparison corrections (SPEC R4.5, decision 3).

p-values come from survival functions (``2·t.sf(|t|, n−1)``, never ``1 − cdf``), and every
result also carries log10 p from ``logsf``, so a p below float64's range (~1e-308) is still
reported exactly in log space. The automatic test choice (Shapiro–Wilk gate on the paired
differences: n ≥ 20 and Shapiro p > 0.05 → t-test, p ≤ 0.05 → Wilcoxon; n < 20 → t-test, the
original's rule) is reported per row together with the Shapiro p.

Corrections take the family as given; NaN p-values are left out of the family (m counts the
finite ones) and stay NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

LOG10 = math.log(10)


@dataclass(frozen=True)
class PairedResult:
    test: str  # "ttest" or "wilcoxon"
    statistic: float
    p_value: float
    mean_diff: float
    effect_dz: float
    n: int
    log10_p: float = 0.0
    shapiro_p: float | None = None


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"paired samples must be 1-D of equal length: {a.shape} vs {b.shape}")
    return a, b


def t_log_sf(t: float, df: float) -> float:
    """log P(T > t) for Student's t, finite where scipy's logsf underflows to -inf.

    For large t: sf = ½ I_x(ν/2, ½) with x = ν/(ν + t²), and I_x(a, b) = x^a (1−x)^b /
    (a B(a, b)) · ₂F₁(a + b, 1; a + 1; x) (series summed in log space; x is tiny there).
    """
    v = float(_st.t.logsf(t, df))
    if np.isfinite(v) or t <= 0:
        return v
    return _t_log_sf_series(t, df)


def _t_log_sf_series(t: float, df: float) -> float:
    a, b = df / 2, 0.5
    x = df / (df + t * t)
    term, total, k = 1.0, 1.0, 0
    while term > 1e-17 * total and k < 10_000:
        term *= (a + b + k) / (a + 1 + k) * x
        total += term
        k += 1
    log_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    return (math.log(0.5) + a * math.log(x) + b * math.log1p(-x) - math.log(a) - log_beta
            + math.log(total))


def paired_ttest_full(a, b) -> tuple[float, float, float]:
    """(t, p, log10 p), two-sided, df = n − 1; (0, 1, 0) for n < 2 or no variation."""
    a, b = _pair(a, b)
    d = a - b
    n = d.size
    if n < 2:
        return 0.0, 1.0, 0.0
    sd = d.std(ddof=1)
    if sd < 1e-10:
        if abs(d.mean()) < 1e-10:
            return 0.0, 1.0, 0.0
        return float(np.sign(d.mean()) * np.inf), 0.0, -np.inf
    t = d.mean() / (sd / np.sqrt(n))
    logp = math.log(2) + t_log_sf(abs(t), n - 1)
    return float(t), float(min(1.0, 2 * _st.t.sf(abs(t), n - 1))), min(0.0, logp / LOG10)


def paired_ttest(a, b) -> tuple[float, float]:
    """(t, p): the paired t-test via the survival function (no underflow to p = 0)."""
    t, p, _ = paired_ttest_full(a, b)
    return t, p


def wilcoxon_full(a, b) -> tuple[float, float, float]:
    """(W, p, log10 p): scipy's two-sided Wilcoxon signed-rank on the differences with
    |d| > 1e-10; fewer than 10 such differences → (0, 1, 0) (the original's rule). When p
    underflows, log10 p comes from the normal approximation of W."""
    a, b = _pair(a, b)
    d = a - b
    d = d[np.abs(d) > 1e-10]
    if d.size < 10:
        return 0.0, 1.0, 0.0
    r = _st.wilcoxon(d, alternative="two-sided")
    p = float(r.pvalue)
    if p > 0:
        return float(r.statistic), p, math.log10(p)
    n = d.size
    z = (r.statistic - n * (n + 1) / 4) / math.sqrt(n * (n + 1) * (2 * n + 1) / 24)
    return float(r.statistic), p, (math.log(2) + float(_st.norm.logsf(abs(z)))) / LOG10


def wilcoxon(a, b) -> tuple[float, float]:
    w, p, _ = wilcoxon_full(a, b)
    return w, p


def shapiro_p(d) -> float | None:
    """Shapiro–Wilk p of the differences (None if n < 3 or constant)."""
    d = np.asarray(d, np.float64)
    if d.size < 3 or np.ptp(d) == 0:
        return None
    return float(_st.shapiro(d).pvalue)


def choose_test(d, alpha: float = 0.05, min_n: int = 20) -> tuple[str, float | None]:
    """The automatic choice: ("ttest" | "wilcoxon", Shapiro p or None)."""
    d = np.asarray(d, np.float64)
    if d.size < min_n:
        return "ttest", None
    sp = shapiro_p(d)
    return ("ttest" if sp is None or sp > alpha else "wilcoxon"), sp


def cohens_d(a, b, paired: bool = True) -> float:
    """paired: d_z = mean(a−b)/sd(a−b) (ddof 1; 0 if sd < 1e-10); unpaired: (mean a − mean
    b) / pooled sd (ddof-1 variances)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if paired:
        a, b = _pair(a, b)
        d = a - b
        if d.size < 2:
            return 0.0
        sd = d.std(ddof=1)
        return 0.0 if sd < 1e-10 else float(d.mean() / sd)
    na, nb = a.size, b.size
    if na < 2 or nb < 2:
        raise ValueError(f"unpaired Cohen's d needs ≥ 2 values per group, got {na} and {nb}")
    pooled = ((na - 1) * a.var(ddof=1) + (nb - 1) * b.var(ddof=1)) / (na + nb - 2)
    sd = math.sqrt(pooled)
    return 0.0 if sd < 1e-10 else float((a.mean() - b.mean()) / sd)


def cohens_dz(a, b) -> float:
    return cohens_d(a, b, paired=True)


def paired_comparison(a, b, test: str = "auto") -> PairedResult:
    """Paired test of a vs b (pairs with a non-finite member dropped): "auto" | "ttest" |
    "wilcoxon"; effect = d_z; the chosen test and Shapiro p are in the result."""
    a, b = _pair(a, b)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    d = a - b
    sp = None
    if test == "auto":
        test, sp = choose_test(d)
    if test == "ttest":
        s, p, lp = paired_ttest_full(a, b)
    elif test == "wilcoxon":
        s, p, lp = wilcoxon_full(a, b)
    else:
        raise ValueError(f"test must be 'auto', 'ttest' or 'wilcoxon', got {test!r}")
    return PairedResult(test, s, p, float(d.mean()) if d.size else 0.0, cohens_dz(a, b),
                        int(d.size), lp, sp)


# --------------------------------------------------------------------------- corrections


def _family(p_values) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(p_values, np.float64)
    if p.ndim != 1:
        raise ValueError(f"p-values must be 1-D, got shape {p.shape}")
    ok = np.isfinite(p)
    if np.any((p[ok] < 0) | (p[ok] > 1)):
        raise ValueError(f"p-values must be in [0, 1], got {p[ok][(p[ok] < 0) | (p[ok] > 1)]}")
    return p, ok


def _adjust_sorted(p_values: Sequence[float], adjust) -> np.ndarray:
    """Apply `adjust` (ascending finite p-values → adjusted, same order) to the finite
    entries of a family; NaN stays NaN, the input order is kept."""
    p, ok = _family(p_values)
    out = np.full(p.shape, np.nan)
    q = p[ok]
    order = np.argsort(q, kind="stable")
    r = np.empty(q.size)
    r[order] = adjust(q[order])
    out[ok] = r
    return out


def _holm_sorted(q: np.ndarray) -> np.ndarray:
    m = q.size
    return np.minimum(1.0, np.maximum.accumulate(q * (m - np.arange(m))))


def _bh_sorted(q: np.ndarray) -> np.ndarray:
    m = q.size
    adj = q * m / np.arange(1, m + 1)
    return np.minimum(1.0, np.minimum.accumulate(adj[::-1])[::-1])


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p ([0.01, 0.04, 0.03] → [0.03, 0.06, 0.06])."""
    return _adjust_sorted(p_values, _holm_sorted)


def bonferroni(p_values: Sequence[float]) -> np.ndarray:
    p, ok = _family(p_values)
    out = np.full(p.shape, np.nan)
    out[ok] = np.minimum(p[ok] * ok.sum(), 1.0)
    return out


def benjamini_hochberg(p_values: Sequence[float]) -> np.ndarray:
    """BH step-up adjusted p (= scipy.stats.false_discovery_control(method='bh'))."""
    return _adjust_sorted(p_values, _bh_sorted)


CORRECTIONS = {"holm": holm, "bonferroni": bonferroni, "fdr_bh": benjamini_hochberg,
               "bh": benjamini_hochberg}


def correct(p_values: Sequence[float], method: str = "holm",
            alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """(adjusted p, significant = adjusted < alpha) for "holm" | "bonferroni" | "fdr_bh"."""
    if method not in CORRECTIONS:
        raise ValueError(f"correction must be one of {sorted(CORRECTIONS)}, got {method!r}")
    adj = CORRECTIONS[method](p_values)
    return adj, np.where(np.isfinite(adj), adj < alpha, False)


multiple_comparison_correction = correct
