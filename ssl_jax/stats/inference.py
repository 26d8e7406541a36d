"""Bootstrap confidence intervals (vectorised, explicit key), paired tests, effect sizes and
multiple-comparison corrections (SPEC R4.5, with decision 3: p-values from survival
functions, never underflowing to 0 through 1 - cdf)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats as _st


def bootstrap_ci(values, key: jax.Array, *, n_resamples: int = 10_000,
                 confidence: float = 0.95, chunk: int = 1000) -> tuple[np.ndarray, ...]:
    """Percentile bootstrap CI of the mean for every row of `values` (rows, n) at once.

    The same resample indices serve every row (rows are typically paired measurements of
    the same images). NaN entries are dropped per row by weighting. Returns (mean, lo, hi),
    each (rows,).
    """
    v = jnp.asarray(values, jnp.float32)
    if v.ndim == 1:
        v = v[None]
    n = v.shape[1]
    if n == 0:
        raise ValueError("bootstrap_ci needs at least one value per row")
    valid = jnp.isfinite(v)
    v0 = jnp.where(valid, v, 0.0)
    w = valid.astype(jnp.float32)

    @jax.jit
    def resampled_means(k):
        idx = jax.random.randint(k, (chunk, n), 0, n)
        counts = jax.vmap(lambda i: jnp.bincount(i, length=n))(idx).astype(jnp.float32)
        return (v0 @ counts.T) / jnp.maximum(w @ counts.T, 1.0)  # (rows, chunk)

    keys = jax.random.split(key, -(-n_resamples // chunk))
    means = jnp.concatenate([resampled_means(k) for k in keys], axis=1)[:, :n_resamples]
    alpha = (1 - confidence) / 2
    lo, hi = jnp.quantile(means, jnp.asarray([alpha, 1 - alpha]), axis=1)
    point = jnp.sum(v0, 1) / jnp.maximum(jnp.sum(w, 1), 1.0)
    return np.asarray(point), np.asarray(lo), np.asarray(hi)


@dataclass(frozen=True)
class PairedResult:
    test: str
    statistic: float
    p_value: float
    mean_diff: float
    effect_dz: float
    n: int


def paired_ttest(a, b) -> tuple[float, float]:
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    n = d.size
    if n < 2:
        return 0.0, 1.0
    sd = d.std(ddof=1)
    if sd < 1e-10:
        return (0.0, 1.0) if abs(d.mean()) < 1e-10 else (float(np.sign(d.mean()) * np.inf), 0.0)
    t = d.mean() / (sd / np.sqrt(n))
    return float(t), float(2 * _st.t.sf(abs(t), n - 1))  # sf: no 1 - cdf underflow


def wilcoxon(a, b) -> tuple[float, float]:
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    d = d[np.abs(d) > 1e-10]
    if d.size < 10:
        return 0.0, 1.0
    r = _st.wilcoxon(d, alternative="two-sided")
    return float(r.statistic), float(r.pvalue)


def cohens_dz(a, b) -> float:
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if d.size < 2:
        return 0.0
    sd = d.std(ddof=1)
    return 0.0 if sd < 1e-10 else float(d.mean() / sd)


def paired_comparison(a, b, test: str = "auto") -> PairedResult:
    """auto: Shapiro-Wilk on the differences (n ≥ 20) picks the t-test (p > 0.05) or
    Wilcoxon; n < 20 uses the t-test (the original's rule)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in shape: {a.shape} vs {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    d = a - b
    if test == "auto":
        test = "ttest"
        if d.size >= 20 and np.ptp(d) > 0 and _st.shapiro(d).pvalue <= 0.05:
            test = "wilcoxon"
    if test == "ttest":
        s, p = paired_ttest(a, b)
    elif test == "wilcoxon":
        s, p = wilcoxon(a, b)
    else:
        raise ValueError(f"test must be 'auto', 'ttest' or 'wilcoxon', got {test!r}")
    return PairedResult(test, s, p, float(d.mean()) if d.size else 0.0, cohens_dz(a, b),
                        int(d.size))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values ([0.01, 0.04, 0.03] → [0.03, 0.06, 0.06])."""
    p = np.asarray(p_values, np.float64)
    m = p.size
    order = np.argsort(p, kind="stable")
    adj = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out = np.empty(m)
    out[order] = adj
    return out
