"""Issue 12, cases 4 and 6: EMD that cannot fail on valid input; degenerate maps give NaN.

Case 4 — on e98ceba `metrics.emd` raised ``RuntimeError: EMD transport LP failed: The
problem is infeasible`` for 59 of the 300 quantised maps built below (HiGHS presolve on
1e-21–1e-9 deficits from the Gaussian targets' tails), and one such map aborted the whole
batched call. Case 6 — an all-NaN map scored IoU@90 0.98 against a box in the top rows and
a map with one +inf pixel scored pointing 1 and coverage 0 (sanitise, then tie-break).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
import scipy.stats
from scipy.optimize import linprog

from ssl_jax import metrics as M

S = 224
PCTS = (90, 85, 80, 75, 70, 60, 50)


def _support(size=8):
    c = (np.arange(size) + 0.5) / size
    return np.stack(np.meshgrid(c, c, indexing="ij"), -1).reshape(-1, 2)


def _cost(size=8):
    s = _support(size)
    return np.sqrt(((s[:, None] - s[None]) ** 2).sum(-1))


def _lp_w1(a, b):
    """The full 64 × 64 transportation LP, HiGHS dual simplex, presolve off, tolerances 1e-10
    (an independent exact reference; the balance row of b is implied by the others)."""
    n = a.size
    eq = np.zeros((2 * n, n * n))
    for i in range(n):
        eq[i, i * n:(i + 1) * n] = 1
        eq[n + i, i::n] = 1
    r = linprog(_cost().ravel(), A_eq=eq[:-1], b_eq=np.r_[a, b][:-1], bounds=(0, None),
                method="highs-ds", options={"presolve": False,
                                            "primal_feasibility_tolerance": 1e-10,
                                            "dual_feasibility_tolerance": 1e-10})
    assert r.success, r.message
    return r.fun


def _weights(x):
    return M.normalize_transport_weights(np.asarray(M.emd_grids(np.asarray(x, np.float32))))


def _quantised_world(n=300, seed=0):
    """Gaussian soft targets of 1–3 random boxes, and the same maps quantised to k/8."""
    r = np.random.default_rng(seed)
    boxes = np.zeros((n, 3, 4))
    valid = np.zeros((n, 3), bool)
    for i in range(n):
        for j in range(r.integers(1, 4)):
            x1, y1 = r.uniform(0, S - 20, 2)
            w, h = r.uniform(10, S / 2, 2)
            boxes[i, j] = (x1, y1, min(x1 + w, S), min(y1 + h, S))
            valid[i, j] = True
    t = np.asarray(M.gaussian_targets(boxes.astype(np.float32), valid, S, S))
    return (np.round(t * 8) / 8).astype(np.float32), t


# --------------------------------------------------------------------------- case 4: EMD


def test_emd_solves_every_quantised_map_in_one_batch():
    maps, t = _quantised_world()
    got = M.emd(maps[:, None], t[:, None])[:, 0]  # one batched call (e98ceba: RuntimeError)
    assert got.shape == (300,) and np.isfinite(got).all() and (got > 0).all()
    for i in range(0, 300, 20):  # 15 of them against two independent exact references
        a, b = _weights(maps[i]), _weights(t[i])
        assert got[i] == pytest.approx(_lp_w1(a, b), abs=1e-9)
        ref = scipy.stats.wasserstein_distance_nd(_support(), _support(), a, b)
        assert got[i] == pytest.approx(ref, abs=1e-6)  # scipy's HiGHS: default tolerance 1e-7


def test_emd_matches_the_lp_on_hard_weight_vectors():
    """One-hot, uniform (a constant map's weights), a zero region, near ties and exact ties
    straight through the solver, against the tight LP."""
    r = np.random.default_rng(3)
    cost = _cost()
    gauss = _weights(M.gaussian_target(np.array([[0.2, 0.3, 0.6, 0.5]]), 64, 64))
    one_hot = np.zeros(64)
    one_hot[37] = 1
    uniform = np.full(64, 1 / 64)
    zero_region = M.normalize_transport_weights(np.where(np.arange(64) < 24, 0, r.random(64)))
    near = M.normalize_transport_weights(gauss * (1 + 1e-9 * r.standard_normal(64)))
    tied = M.normalize_transport_weights(np.repeat([1.0, 2.0], 32))
    cases = [(one_hot, gauss), (uniform, gauss), (zero_region, gauss), (near, gauss),
             (tied, uniform), (one_hot, one_hot[::-1].copy()), (gauss, gauss)]
    for a, b in cases:
        assert M.wasserstein1(a, b, cost) == pytest.approx(_lp_w1(a, b), abs=1e-9)
    assert M.wasserstein1(gauss, gauss, cost) == 0.0
    with pytest.raises(ValueError, match="must be finite, ≥ 0 and each sum to 1"):
        M.wasserstein1(np.full(64, 1 / 32), uniform, cost)


def test_emd_batch_with_every_kind_of_map_returns_every_value():
    maps, t = _quantised_world(12, seed=5)
    r = np.random.default_rng(6)
    one_hot = np.zeros((S, S), np.float32)
    one_hot[13, 41] = 1  # on a bilinear tap of the 8×8 grid
    zero_region = t[1] * (np.arange(S)[:, None] < S // 2)
    near_tie = t[2] + np.float32(1e-7) * r.standard_normal((S, S)).astype(np.float32)
    good = np.stack([maps[0], one_hot, zero_region, near_tie, t[4]]).astype(np.float32)
    bad = np.stack([np.zeros((S, S)), np.full((S, S), 0.5), np.full((S, S), np.nan)]
                   ).astype(np.float32)
    batch = np.concatenate([good, bad])[None]  # (1, 8, S, S) against one target
    got = M.emd(batch, t[:1, None])[0]
    assert np.isfinite(got[:5]).all() and np.isnan(got[5:]).all()
    assert got[4] > 0 and M.emd(t[0], t[0]) == 0.0
    for j in range(5):  # batched = one at a time = the LP
        assert got[j] == M.emd(good[j], t[0])
        assert got[j] == pytest.approx(_lp_w1(_weights(good[j]), _weights(t[0])), abs=1e-9)


# --------------------------------------------------------------------------- case 6


def _top_box(size=S, rows=22):
    """A box over the top rows (at 224²: 22 rows = 4928 px; IoU@90 keeps 5018 px)."""
    edges = np.array([[[0, 0, size, rows]]], np.int32)
    valid = np.ones((1, 1), bool)
    mask = np.zeros((1, size, size), bool)
    mask[0, :rows] = True
    target = M.gaussian_target(np.array([[0, 0, 1, rows / size]]), size, size)[None]
    return edges, valid, mask, target.astype(np.float32)


SMALL = 32  # the every-metric tests run at 32² (compiles in seconds; same code paths)


def _all_metrics(maps, edges, valid, mask, target):
    """Every per-map metric of maps (1, L, S, S) through the standalone functions."""
    g = mask[:, None]
    iou, _, _ = M.iou_at_percentiles(maps, g, PCTS)
    p, plogp = M.target_terms(target)
    out = {f"iou@{q}": iou[..., j] for j, q in enumerate(PCTS)}
    out.update(
        iou=M.iou(maps, g, 90), coverage=M.coverage(maps, g), pointing=M.pointing_hit(maps, g),
        pointing_tol=M.pointing_hit(maps, g, tolerance=3),
        top_k=M.top_k_pointing(maps, g, k=5), mse=M.mse(maps, target[:, None]),
        kl=M.kl_target_attention(maps, target[:, None]),
        kl_terms=M.kl_from_terms(maps, p[:, None], plogp[:, None]),
        emd=M.emd(maps, target[:, None]),
        box_iou=M.box_iou(maps, edges, valid, (90, 50)),
        box_pointing=M.box_pointing(maps, edges, valid),
        feature_pointing=M.by_label_any(M.box_pointing(maps, edges, valid),
                                        np.zeros((1, 1), int), valid, 1),
        rma=M.relevance_mass_accuracy(maps, g), rra=M.relevance_rank_accuracy(maps, g),
        auc=M.roc_auc(maps, g), mass_jaccard=M.mass_jaccard(maps, g))
    return {k: np.asarray(v, np.float64) for k, v in out.items()}


def _degenerate_maps(size=SMALL):
    nan = np.full((size, size), np.nan, np.float32)
    one_inf = np.zeros((size, size), np.float32)
    one_inf[1, 10] = np.inf  # inside the top box
    noisy_inf = np.random.default_rng(0).random((size, size)).astype(np.float32)
    noisy_inf[1, 10] = np.inf
    neg = -np.random.default_rng(1).random((size, size)).astype(np.float32)
    neg_inf = noisy_inf.copy()
    neg_inf[1, 10], neg_inf[3, 3] = 0.5, -np.inf
    return {"all-NaN": nan, "one +inf": one_inf, "noise + one +inf": noisy_inf,
            "all-zero": np.zeros((size, size), np.float32),
            "constant": np.full((size, size), 0.7, np.float32), "all ≤ 0": neg,
            "one -inf": neg_inf}


def test_issue_numbers_all_nan_and_one_inf_maps_are_nan():
    _, _, mask, target = _top_box()
    g = mask[:, None]
    nan_map = np.full((1, 1, S, S), np.nan, np.float32)
    one_inf = np.zeros((1, 1, S, S), np.float32)
    one_inf[..., 5, 100] = np.inf
    # e98ceba: the all-NaN map became zeros whose "top 10 %" is the first 22.4 rows → 0.98
    assert np.isnan(M.iou(nan_map, g, 90)).all()  # was 4928 / 5018 = 0.982
    assert np.isnan(M.pointing_hit(one_inf, g)).all()  # was 1.0
    assert np.isnan(M.coverage(one_inf, g)).all()  # was 0.0
    grid = M.alignment_grid(np.concatenate([nan_map, one_inf], 1), mask, target)
    assert np.isnan(grid["iou@90"]).all() and np.isnan(grid["pointing"]).all()
    assert np.isnan(grid["coverage"]).all()
    # the same box against a real map in the same place keeps its number
    real = np.zeros((1, 1, S, S), np.float32)
    real[..., :30, :] = np.linspace(1, 0.5, 30, dtype=np.float32)[:, None]
    assert float(M.iou(real, g, 90)[0, 0]) == pytest.approx(4928 / (5018 + 1e-8))
    assert float(M.pointing_hit(real, g)[0, 0]) == 1.0


@pytest.mark.slow
def test_every_metric_is_nan_for_every_degenerate_map_standalone_and_grid():
    edges, valid, mask, target = _top_box(SMALL, 3)
    bad = _degenerate_maps()
    maps = np.stack(list(bad.values()))[None]  # (1, 7, S, S)
    assert np.asarray(M.degenerate(maps)).tolist() == [[True] * len(bad)]
    for name, v in _all_metrics(maps, edges, valid, mask, target).items():
        assert np.isnan(v).all(), f"{name}: {v}"
    for dtype in (np.float32, np.float16):  # the float16 path takes the packed sort
        grid = M.alignment_grid(maps.astype(dtype), mask, target, PCTS, tolerance=2)
        for name, v in grid.items():
            if name == "annotation_area":
                np.testing.assert_allclose(v, 3 / SMALL)
            else:
                assert np.isnan(np.asarray(v)).all(), f"grid {dtype.__name__} {name}: {v}"


@pytest.mark.slow
def test_non_degenerate_maps_keep_their_numbers_beside_degenerate_ones():
    """Degenerate maps in a batch change nothing for the others: the same numbers as the
    maps alone, bit for bit (the NaN rule is a `where` on otherwise untouched outputs)."""
    edges, valid, mask, target = _top_box(SMALL, 3)
    r = np.random.default_rng(2)
    z = SMALL
    good = np.stack([r.random((z, z)), np.round(r.random((z, z)) * 3) / 3,
                     M.center_gaussian(z, z), M.saliency_prior(z, z)]).astype(np.float32)
    good[0, 3, :] = -0.25  # negative values are allowed while some mass is positive
    mixed = np.concatenate([good, np.stack(list(_degenerate_maps().values()))])[None]
    n = len(good)
    assert not np.asarray(M.degenerate(good)).any()
    alone = _all_metrics(good[None], edges, valid, mask, target)
    both = _all_metrics(mixed, edges, valid, mask, target)
    for name in alone:
        got, want = both[name][:, :n], alone[name]
        np.testing.assert_array_equal(got, want, err_msg=name)
        assert np.isfinite(want).all() and np.isnan(both[name][:, n:]).all(), name
    g_alone = M.alignment_grid(good[None], mask, target, PCTS, tolerance=1)
    g_both = M.alignment_grid(mixed, mask, target, PCTS, tolerance=1, batch_size=2)
    for name in g_alone:
        np.testing.assert_array_equal(np.asarray(g_both[name])[:, :n], g_alone[name], name)


def test_baseline_maps_are_not_degenerate():
    rgb = np.random.default_rng(4).integers(0, 256, (40, 48, 3), np.uint8)
    maps = [M.center_gaussian(), M.saliency_prior(), M.sobel_edges(rgb),
            *np.asarray(M.random_maps(jax.random.key(0), 2, trials=3, height=S, width=S))
            .reshape(-1, S, S)]
    assert not np.asarray(M.degenerate(np.stack(maps))).any()


def test_degenerate_flag_shape_dtype_and_jit():
    x = np.random.default_rng(0).random((2, 3, 4, 5, 6)).astype(np.float32)
    x[1, 2, 3] = 0.25  # constant
    x[0, 1, 0, 0, 0] = np.nan
    want = np.zeros((2, 3, 4), bool)
    want[1, 2, 3] = want[0, 1, 0] = True
    np.testing.assert_array_equal(M.degenerate(x), want)
    np.testing.assert_array_equal(jax.jit(M.degenerate)(x.astype(np.float16)), want)
    assert not bool(M.degenerate(np.eye(3, dtype=np.int32)))
    with pytest.raises(ValueError, match=r"maps must be \(..., H, W\)"):
        M.degenerate(np.zeros(4))


def test_aggregates_skip_nan_and_report_how_many():
    v = np.array([[0.5, np.nan], [0.25, 0.75], [np.nan, np.nan], [1.0, 0.5]])
    d = M.describe(v)
    assert d.count.tolist() == [3, 2] and d.excluded.tolist() == [1, 2]
    assert float(d.mean[0]) == pytest.approx(0.5833333) and float(d.median[1]) == 0.5
    assert float(M.lower_median(np.array([3.0, np.nan, 1.0, 2.0]))) == 2.0
    s = M.segment_stats(v, np.array([0, 0, 1, -1]), 3)
    assert s.count.tolist() == [[2, 1], [0, 0], [0, 0]]
    assert s.excluded.tolist() == [[0, 1], [1, 1], [0, 0]]  # label −1 is not "excluded"
    st = M.by_style(v, np.array([[1, 0], [1, 1], [0, 1], [1, 0]], bool), 2)
    assert st.count.tolist() == [[3, 2], [1, 1]] and st.excluded.tolist() == [[0, 1], [1, 1]]
    bf = M.by_feature(np.array([[[0.2, np.nan, 0.4]]]), np.array([[0, 0, 1]]),
                      np.array([[True, True, True]]), 2)
    assert bf.count.tolist() == [[1], [1]] and bf.excluded.tolist() == [[1], [0]]
    # per-feature pointing of a degenerate map: NaN, not "missed"
    hits = np.array([[[1.0, 0.0], [np.nan, np.nan]]])  # (I=1, maps=2, K=2)
    out = np.asarray(M.by_label_any(hits, np.array([[0, 1]]), np.ones((1, 2), bool), 2))
    assert out[0, 0].tolist() == [1.0, 0.0] and np.isnan(out[0, 1]).all()
