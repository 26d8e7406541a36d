"""Bootstrap confidence intervals, vectorised in JAX with an explicit key (SPEC decision 6).

`bootstrap_ci(values (rows, n), key)` resamples the n columns with replacement
`n_resamples` times (10,000 by default) and returns, per row, the statistic of the data and a
percentile or BCa interval. All rows share the same resample indices, so rows of paired
measurements of the same images (models, layers, …) are resampled jointly; the paired
bootstrap of a difference is `bootstrap_ci(a - b, key)` (`paired_bootstrap_ci`).

* Resamples are drawn ``jax.random.randint(fold_in(key, c), (chunk, n), 0, n)`` for chunk c
  and processed by `jax.lax.map` (memory ∝ rows × chunk, not rows × 10,000 × n).
* "mean" is computed as counts @ values (one matmul per chunk, float32 at HIGHEST precision);
  NaN entries are dropped per row by weighting (the mean of the finite resampled values).
  "median" and a callable statistic (``f(x, axis=-1)``, vectorised) gather the resamples and
  need finite values.
* Percentile interval: linear interpolation of the bootstrap distribution at α/2, 1 − α/2
  (numpy's default, as the original and scipy). BCa (Efron 1987, as ``scipy.stats.bootstrap``):
  bias z0 = Φ⁻¹(#{θ* < θ̂}/B + ½·#{θ* = θ̂}/B), acceleration from the jackknife
  a = Σ(θ̄ − θ₍ᵢ₎)³ / (6 (Σ(θ̄ − θ₍ᵢ₎)²)^{3/2}), then the percentile interval at
  Φ(z0 + (z0 + z_q)/(1 − a(z0 + z_q))).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr, ndtri

HIGHEST = jax.lax.Precision.HIGHEST


class BootstrapCI(NamedTuple):
    point: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


def _quantile_sorted(s: jax.Array, q: jax.Array) -> jax.Array:
    """Linear-interpolation quantile of each row of sorted s at per-row q: (rows,)."""
    b = s.shape[-1]
    pos = jnp.clip(q, 0.0, 1.0) * (b - 1)
    lo = jnp.floor(pos).astype(jnp.int32)
    hi = jnp.minimum(lo + 1, b - 1)
    frac = pos - lo
    vlo = jnp.take_along_axis(s, lo[..., None], axis=-1)[..., 0]
    vhi = jnp.take_along_axis(s, hi[..., None], axis=-1)[..., 0]
    return vlo + frac * (vhi - vlo)


def _stat_fn(statistic) -> Callable:
    if callable(statistic):
        return statistic
    if statistic == "median":
        return lambda x, axis=-1: jnp.median(x, axis=axis)
    if statistic == "mean":
        return lambda x, axis=-1: jnp.mean(x, axis=axis)
    raise ValueError(f"statistic must be 'mean', 'median' or a callable, got {statistic!r}")


@partial(jax.jit, static_argnames=("n_resamples", "chunk", "statistic", "method"))
def _bootstrap(v, key, confidence, n_resamples, chunk, statistic, method):
    rows, n = v.shape
    n_chunks = -(-n_resamples // chunk)
    valid = jnp.isfinite(v)
    v0 = jnp.where(valid, v, 0.0)
    w = valid.astype(jnp.float32)
    is_mean = statistic == "mean"
    f = _stat_fn(statistic)

    def one(c):
        idx = jax.random.randint(jax.random.fold_in(key, c), (chunk, n), 0, n)
        if is_mean:
            counts = jax.vmap(lambda i: jnp.bincount(i, length=n))(idx).astype(jnp.float32)
            s = jnp.matmul(v0, counts.T, precision=HIGHEST)
            m = jnp.matmul(w, counts.T, precision=HIGHEST)
            return jnp.where(m > 0, s / jnp.maximum(m, 1.0), jnp.nan)  # (rows, chunk)
        return f(v[:, idx], axis=-1)  # (rows, chunk)

    boot = jax.lax.map(one, jnp.arange(n_chunks))  # (n_chunks, rows, chunk)
    boot = jnp.moveaxis(boot, 1, 0).reshape(rows, n_chunks * chunk)[:, :n_resamples]
    cnt = jnp.sum(w, axis=1)
    if is_mean:
        point = jnp.where(cnt > 0, jnp.sum(v0, 1) / jnp.maximum(cnt, 1.0), jnp.nan)
    else:
        point = f(v, axis=-1)
    alpha = (1 - confidence) / 2
    s = jnp.sort(boot, axis=-1)
    if method == "percentile":
        q_lo = jnp.full((rows,), alpha)
        q_hi = jnp.full((rows,), 1 - alpha)
    else:  # bca
        below = jnp.mean(boot < point[:, None], axis=1)
        equal = jnp.mean(boot == point[:, None], axis=1)
        z0 = ndtri(below + 0.5 * equal)
        if is_mean:
            tot = jnp.sum(v0, 1, keepdims=True)
            jk = (tot - v0) / jnp.maximum(cnt[:, None] - 1, 1.0)  # leave-one-out means
        else:
            loo = np.array([np.delete(np.arange(n), i) for i in range(n)])  # (n, n-1)
            jk = f(v[:, loo], axis=-1)  # (rows, n)
        jk_mean = jnp.sum(jnp.where(valid, jk, 0.0), 1, keepdims=True) / jnp.maximum(
            cnt[:, None], 1.0)
        d = jnp.where(valid, jk_mean - jk, 0.0)
        num = jnp.sum(d**3, axis=1)
        den = 6 * jnp.sum(d**2, axis=1) ** 1.5
        a = jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)
        z_lo, z_hi = ndtri(jnp.float32(alpha)), ndtri(jnp.float32(1 - alpha))
        q_lo = ndtr(z0 + (z0 + z_lo) / (1 - a * (z0 + z_lo)))
        q_hi = ndtr(z0 + (z0 + z_hi) / (1 - a * (z0 + z_hi)))
    return point, _quantile_sorted(s, q_lo), _quantile_sorted(s, q_hi), boot


def bootstrap_distribution(values, key: jax.Array, *, n_resamples: int = 10_000,
                           statistic="mean", chunk: int = 1000) -> np.ndarray:
    """The (rows, n_resamples) bootstrap statistics themselves (same draws as `bootstrap_ci`)."""
    v = _prepare(values, statistic, "percentile", n_resamples, chunk)
    return np.asarray(_bootstrap(v, key, 0.95, int(n_resamples), min(int(chunk), n_resamples),
                                 statistic, "percentile")[3])


def _prepare(values, statistic, method, n_resamples, chunk) -> jax.Array:
    v = jnp.asarray(values, jnp.float32)
    if v.ndim == 1:
        v = v[None]
    if v.ndim != 2:
        raise ValueError(f"values must be (n,) or (rows, n), got shape {v.shape}")
    if v.shape[1] < 2:
        raise ValueError(f"bootstrap needs at least 2 values per row, got {v.shape[1]}")
    if method not in ("percentile", "bca"):
        raise ValueError(f"method must be 'percentile' or 'bca', got {method!r}")
    if n_resamples < 2 or chunk < 1:
        raise ValueError(f"need n_resamples ≥ 2 and chunk ≥ 1, got {n_resamples}, {chunk}")
    _stat_fn(statistic)
    if statistic != "mean" and not bool(jnp.all(jnp.isfinite(v))):
        raise ValueError(f"statistic {statistic!r} needs finite values; drop NaN first "
                         "(only 'mean' skips NaN by weighting)")
    return v


def bootstrap_ci(values, key: jax.Array, *, n_resamples: int = 10_000,
                 confidence: float = 0.95, method: str = "percentile", statistic="mean",
                 chunk: int = 1000) -> BootstrapCI:
    """Per-row (point, lo, hi) of `values` (rows, n) or (n,) — see the module docstring.

    Returns numpy arrays of shape (rows,) (also for 1-D input).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    v = _prepare(values, statistic, method, n_resamples, chunk)
    point, lo, hi, _ = _bootstrap(v, key, float(confidence), int(n_resamples),
                                  min(int(chunk), int(n_resamples)), statistic, method)
    return BootstrapCI(np.asarray(point), np.asarray(lo), np.asarray(hi))


def paired_bootstrap_ci(a, b, key: jax.Array, **kwargs) -> BootstrapCI:
    """CI of the mean paired difference a − b (rows of a and b paired column by column)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in shape: {a.shape} vs {b.shape}")
    return bootstrap_ci(a - b, key, **kwargs)
