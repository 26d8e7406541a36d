"""ssl_jax.stats against scipy and explicit numpy loops (SPEC R4.5, decision 3)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import scipy.stats as st

from ssl_jax import stats as S

RNG = np.random.default_rng(0)
A = RNG.normal(0.30, 0.10, 139)
B = A - RNG.normal(0.02, 0.05, 139)


def test_paired_ttest_matches_scipy_and_never_underflows():
    t, p = S.paired_ttest(A, B)
    ref = st.ttest_rel(A, B)
    assert t == pytest.approx(ref.statistic, rel=1e-10)
    assert p == pytest.approx(ref.pvalue, rel=1e-8)
    # a huge effect: 1 - cdf would give exactly 0; sf keeps the tiny p, logsf its log
    a = np.linspace(0, 1, 139)
    b = a - 1.0 - 1e-3 * np.sin(np.arange(139))
    t, p, lp = S.paired_ttest_full(a, b)
    assert 2 * (1 - st.t.cdf(abs(t), 138)) == 0.0
    assert np.isfinite(lp) and lp < -300
    assert p == 0.0 or p == pytest.approx(10**lp, rel=1e-6)
    c = a - 0.05 - 0.02 * np.sin(np.arange(139))
    t, p, lp = S.paired_ttest_full(a, c)
    assert 0 < p < 1e-60 and lp == pytest.approx(np.log10(p), rel=1e-9)
    assert S.paired_ttest(a[:1], b[:1]) == (0.0, 1.0)
    assert S.paired_ttest(a, a) == (0.0, 1.0)


def test_t_log_sf_series_matches_scipy_where_both_work():
    from ssl_jax.stats.inference import _t_log_sf_series
    for t, df in [(8.0, 10), (30.0, 138), (60.0, 138), (100.0, 20)]:
        assert _t_log_sf_series(t, df) == pytest.approx(st.t.logsf(t, df), rel=1e-10)


def test_wilcoxon_matches_scipy_and_small_sample_rule():
    w, p = S.wilcoxon(A, B)
    ref = st.wilcoxon(A - B)
    assert w == ref.statistic and p == pytest.approx(ref.pvalue, rel=1e-10)
    assert S.wilcoxon(A[:9], B[:9]) == (0.0, 1.0)  # < 10 non-zero differences
    d = np.zeros(139)
    d[:9] = 1
    assert S.wilcoxon(A, A - d) == (0.0, 1.0)


def test_shapiro_gate_and_paired_comparison():
    skewed = RNG.exponential(1, 139) ** 3
    for seed in range(5):
        x = np.random.default_rng(seed).normal(0, 1, 60)
        expect = "ttest" if st.shapiro(x).pvalue > 0.05 else "wilcoxon"
        assert S.choose_test(x) == (expect, pytest.approx(st.shapiro(x).pvalue))
    test, sp = S.choose_test(skewed)
    assert test == "wilcoxon" and sp == pytest.approx(st.shapiro(skewed).pvalue)
    assert S.choose_test(skewed[:19]) == ("ttest", None)  # n < 20 → t-test
    r = S.paired_comparison(skewed, np.zeros(139))
    assert r.test == "wilcoxon" and r.p_value == pytest.approx(st.wilcoxon(skewed).pvalue)
    assert r.n == 139 and r.effect_dz == pytest.approx(skewed.mean() / skewed.std(ddof=1))
    r = S.paired_comparison(A, B, "ttest")
    assert r.p_value == pytest.approx(st.ttest_rel(A, B).pvalue) and r.shapiro_p is None
    a = A.copy()
    a[3] = np.nan
    assert S.paired_comparison(a, B).n == 138
    with pytest.raises(ValueError, match="test must be 'auto', 'ttest' or 'wilcoxon'"):
        S.paired_comparison(A, B, "ztest")
    with pytest.raises(ValueError, match="equal length"):
        S.paired_comparison(A, B[:-1])


def test_cohens_d_paired_and_pooled():
    d = A - B
    assert S.cohens_d(A, B) == pytest.approx(d.mean() / d.std(ddof=1))
    x, y = RNG.normal(0, 1, 30), RNG.normal(0.5, 2, 40)
    pooled = np.sqrt((29 * x.var(ddof=1) + 39 * y.var(ddof=1)) / 68)
    assert S.cohens_d(x, y, paired=False) == pytest.approx((x.mean() - y.mean()) / pooled)
    assert S.cohens_dz(A, A) == 0.0


def test_corrections_hand_cases_and_scipy():
    np.testing.assert_allclose(S.holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(S.bonferroni([0.01, 0.04, 0.5]), [0.03, 0.12, 1.0])
    p = RNG.random(25) ** 3
    np.testing.assert_allclose(S.benjamini_hochberg(p),
                               st.false_discovery_control(p, method="bh"), rtol=1e-12)
    # Holm by its definition: step-down max of (m - i) p_(i)
    order = np.argsort(p)
    ref = np.empty(25)
    run = 0.0
    for i, j in enumerate(order):
        run = max(run, min(1.0, (25 - i) * p[j]))
        ref[j] = run
    np.testing.assert_allclose(S.holm(p), ref)
    adj, sig = S.correct([0.01, np.nan, 0.04], "holm")
    np.testing.assert_allclose(adj, [0.02, np.nan, 0.04])
    assert sig.tolist() == [True, False, True]
    with pytest.raises(ValueError, match="correction must be one of"):
        S.correct([0.1], "sidak")
    with pytest.raises(ValueError, match=r"p-values must be in \[0, 1\]"):
        S.holm([0.1, 1.5])


def test_bootstrap_mean_equals_explicit_resampling_loop():
    """Same draws, computed the slow way: randint per chunk, mean per resample, percentile."""
    x = np.stack([A, B])
    key = jax.random.key(7)
    ci = S.bootstrap_ci(x, key, n_resamples=2500, chunk=1000)
    boot = []
    for c in range(3):
        idx = np.asarray(jax.random.randint(jax.random.fold_in(key, c), (1000, 139), 0, 139))
        boot.append(np.stack([x[:, i].astype(np.float32).mean(axis=1) for i in idx], axis=1))
    boot = np.concatenate(boot, axis=1)[:, :2500]
    np.testing.assert_allclose(ci.lo, np.percentile(boot, 2.5, axis=1), rtol=1e-5)
    np.testing.assert_allclose(ci.hi, np.percentile(boot, 97.5, axis=1), rtol=1e-5)
    np.testing.assert_allclose(ci.point, x.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(S.bootstrap_distribution(x, key, n_resamples=2500), boot,
                               rtol=1e-5)


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_bootstrap_agrees_with_scipy(method):
    """Within Monte-Carlo tolerance of scipy.stats.bootstrap (10,000 resamples each)."""
    skewed = RNG.exponential(0.1, 139)
    x = np.stack([A, skewed])
    ci = S.bootstrap_ci(x, jax.random.key(1), method=method)
    for r in range(2):
        ref = st.bootstrap((x[r],), np.mean, n_resamples=10_000, method=method,
                           rng=np.random.default_rng(2)).confidence_interval
        se = x[r].std(ddof=1) / np.sqrt(139)
        # MC sd of a 2.5% quantile of 10,000 means ≈ 0.027 se; of a difference ≈ 0.038 se
        assert abs(ci.lo[r] - ref.low) < 0.15 * se
        assert abs(ci.hi[r] - ref.high) < 0.15 * se
    small = skewed[:60]
    med = S.bootstrap_ci(small, jax.random.key(3), method=method, statistic="median",
                         n_resamples=4000)
    ref = st.bootstrap((small,), np.median, n_resamples=4000, method=method,
                       rng=np.random.default_rng(4)).confidence_interval
    se = small.std(ddof=1) / np.sqrt(60)
    # a bootstrap median only takes order-statistic values, so two Monte-Carlo runs may
    # land one order statistic apart (here ~0.35 se): allow that gap on top of 0.25 se
    order = np.sort(small)

    def gap(v):
        i = int(np.clip(np.searchsorted(order, v), 1, order.size - 1))
        return float(np.max(np.diff(order[max(i - 2, 0):i + 2])))

    assert abs(med.lo[0] - ref.low) < 0.25 * se + gap(ref.low)
    assert abs(med.hi[0] - ref.high) < 0.25 * se + gap(ref.high)


def test_bootstrap_keys_nan_and_paired():
    key = jax.random.key(0)
    a = S.bootstrap_ci(A, key, n_resamples=500)
    b = S.bootstrap_ci(A, key, n_resamples=500)
    c = S.bootstrap_ci(A, jax.random.key(1), n_resamples=500)
    assert a == b and a.lo != c.lo
    x = A.copy()
    x[:10] = np.nan
    ci = S.bootstrap_ci(x, key, n_resamples=500)
    assert ci.point[0] == pytest.approx(A[10:].mean(), rel=1e-6)
    assert ci.lo[0] < ci.point[0] < ci.hi[0]
    pd = S.paired_bootstrap_ci(A, B, key, n_resamples=500)
    np.testing.assert_allclose(pd.lo, S.bootstrap_ci(A - B, key, n_resamples=500).lo)
    with pytest.raises(ValueError, match="needs finite values"):
        S.bootstrap_ci(x, key, statistic="median")
    with pytest.raises(ValueError, match="method must be 'percentile' or 'bca'"):
        S.bootstrap_ci(A, key, method="basic")
    with pytest.raises(ValueError, match="confidence must be in"):
        S.bootstrap_ci(A, key, confidence=95)
    with pytest.raises(ValueError, match=r"values must be \(n,\) or \(rows, n\)"):
        S.bootstrap_ci(np.zeros((2, 2, 2)), key)


def test_zero_differences_linear_probe_rows():
    """Δ = 0 exactly (the linear-probe control, SPEC R8.4): p = 1, CI = [0, 0], no NaN."""
    z = np.zeros(139)
    r = S.paired_comparison(A, A)
    assert (r.test, r.p_value, r.effect_dz, r.shapiro_p) == ("ttest", 1.0, 0.0, None)
    for method in ("percentile", "bca"):
        ci = S.bootstrap_ci(np.stack([z, A - B]), jax.random.key(0), method=method,
                            n_resamples=1000)
        assert (ci.point[0], ci.lo[0], ci.hi[0]) == (0.0, 0.0, 0.0)
        assert np.isfinite(ci.lo[1]) and ci.lo[1] < ci.hi[1]


def test_compare_all_models_and_rank():
    scores = {"dinov3": A + 0.05 + RNG.normal(0, 0.01, 139), "clip": B, "mae": A}
    res = S.compare_all_models(scores, key=jax.random.key(0), n_resamples=2000)
    assert list(res) == [("clip", "dinov3"), ("clip", "mae"), ("dinov3", "mae")]
    raw = [res[k].p_value for k in res]
    np.testing.assert_allclose([res[k].p_corrected for k in res], S.holm(raw))
    r = res[("dinov3", "mae")]
    assert r.mean_diff == pytest.approx(0.05, abs=0.003)
    assert r.family == "holm over 3 pairs of 3 models"
    assert r.ci_lo < r.mean_diff < r.ci_hi and r.ci_hi - r.ci_lo < 0.01
    ranked = S.rank_models(scores, jax.random.key(0), n_resamples=2000)
    assert [x.name for x in ranked] == ["dinov3", "mae", "clip"]
    assert [x.rank for x in ranked] == [1, 2, 3] and ranked[0].lo < ranked[0].mean
    with pytest.raises(ValueError, match="need at least two models"):
        S.compare_all_models({"a": A})
    with pytest.raises(ValueError, match="one length per model"):
        S.compare_all_models({"a": A, "b": B[:5]})


def test_compare_pairs_one_family_keys_and_holm():
    """The one paired-comparison function: test + bootstrap CI + Holm over exactly the pairs
    given, the family named in every result; a single key shares the resamples, per-pair keys
    give each pair its own (= paired_bootstrap_ci)."""
    c = A + RNG.normal(0, 0.05, 139)
    vals = {"a": A, "b": B, "c": c}
    pairs = [("a", "b"), ("c", "a")]
    key = jax.random.key(3)
    res = S.compare_pairs(vals, pairs, family="f (2 tests)", key=key, n_resamples=500)
    assert [(r.a, r.b, r.family) for r in res] == [("a", "b", "f (2 tests)"),
                                                   ("c", "a", "f (2 tests)")]
    ci = S.bootstrap_ci(np.stack([A - B, c - A]), key, n_resamples=500)
    np.testing.assert_array_equal([r.ci_lo for r in res], ci.lo.astype(np.float64))
    np.testing.assert_array_equal([r.ci_mean for r in res], ci.point.astype(np.float64))
    tests = [S.paired_comparison(vals[a], vals[b]) for a, b in pairs]
    np.testing.assert_array_equal([r.p_corrected for r in res], S.holm([t.p_value for t in tests]))
    assert [(r.p_value, r.mean_diff, r.n, r.test) for r in res] == \
        [(t.p_value, t.mean_diff, t.n, t.test) for t in tests]
    assert all(r.significant == (r.p_corrected < 0.05) for r in res)
    keys = [jax.random.key(5), jax.random.key(6)]
    own = S.compare_pairs(vals, pairs, family="f", key=keys, n_resamples=500)
    for r, (a, b), k in zip(own, pairs, keys, strict=True):
        assert r.ci_hi == float(S.paired_bootstrap_ci(vals[a], vals[b], k, n_resamples=500).hi[0])
    none = S.compare_pairs(vals, pairs, family="f", correction="bonferroni")
    assert np.isnan(none[0].ci_lo) and none[1].p_corrected == min(1.0, 2 * tests[1].p_value)
    with pytest.raises(ValueError, match="has no pairs"):
        S.compare_pairs(vals, [], family="f")
    with pytest.raises(ValueError, match=r"not given: \['d'\]"):
        S.compare_pairs(vals, [("a", "d")], family="f")
    with pytest.raises(ValueError, match="1 keys for 2 pairs"):
        S.compare_pairs(vals, pairs, family="f", key=keys[:1])
