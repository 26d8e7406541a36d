"""ssl_jax.metrics against independent per-image numpy implementations (SPEC R4.1–R4.3)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from sklearn.metrics import roc_auc_score

from ssl_jax import metrics as M

H, W = 24, 30
N = H * W
PCTS = (90, 85, 80, 75, 70, 60, 50)


def _world(seed=0, images=4, layers=3, ties=True, max_boxes=3):
    """Random maps (with many ties if asked), random boxes → edges, valid, union masks."""
    r = np.random.default_rng(seed)
    maps = r.random((images, layers, H, W)).astype(np.float32)
    if ties:
        maps = np.round(maps * 6) / 6  # 7 distinct values: heavy ties
    edges = np.zeros((images, max_boxes, 4), np.int32)
    valid = np.zeros((images, max_boxes), bool)
    boxes_px = np.zeros((images, max_boxes, 4), np.float64)
    for i in range(images):
        k = 1 + i % max_boxes
        for j in range(k):
            x1, y1 = r.uniform(0, W - 4), r.uniform(0, H - 4)
            x2, y2 = x1 + r.uniform(1, W / 2), y1 + r.uniform(1, H / 2)
            x2, y2 = min(x2, W), min(y2, H)
            boxes_px[i, j] = (x1, y1, x2, y2)
            e = np.floor([x1, y1, x2, y2]).astype(int)
            e[2], e[3] = max(e[2], e[0] + 1), max(e[3], e[1] + 1)
            edges[i, j] = e
            valid[i, j] = True
    masks = np.zeros((images, H, W), bool)
    for i in range(images):
        for j in range(max_boxes):
            if valid[i, j]:
                x1, y1, x2, y2 = edges[i, j]
                masks[i, y1:y2, x1:x2] = True
    return maps, edges, valid, boxes_px, masks


# ----------------------------------------------------------------- reference implementations


def ref_k(n, p):
    return n if p == 0 else max(1, round(n * (100 - p) / 100))


def ref_topmask(a, p):
    flat = a.ravel()
    order = np.argsort(-flat, kind="stable")  # value descending, index ascending
    m = np.zeros(flat.size, bool)
    m[order[:ref_k(flat.size, p)]] = True
    return m.reshape(a.shape)


def ref_iou(m, g):
    inter, union = np.sum(m & g), np.sum(m | g)
    return inter / (union + 1e-8) if union > 0 else 0.0


def ref_coverage(a, g):
    a = np.clip(np.nan_to_num(a.astype(np.float64), nan=0, posinf=0, neginf=0), 0, None)
    t = a.sum()
    return 0.0 if t < 1e-8 else (a * g).sum() / t


def ref_dilated_at(g, y, x, t):
    return g[max(0, y - t):y + t + 1, max(0, x - t):x + t + 1].any()


def ref_gaussian(boxes_px, valid, h, w):
    y = (np.arange(h, dtype=np.float64) + 0.5)[:, None]
    x = (np.arange(w, dtype=np.float64) + 0.5)[None, :]
    maps = []
    for (x1, y1, x2, y2), v in zip(boxes_px, valid, strict=True):
        if not v:
            continue
        bw, bh = max(x2 - x1, 1), max(y2 - y1, 1)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        sx, sy = max(bw / 4, 1), max(bh / 4, 1)
        g = np.exp(-((x - cx) ** 2 / (2 * sx**2) + (y - cy) ** 2 / (2 * sy**2)))
        maps.append(g / g.max())
    if not maps:
        return np.zeros((h, w))
    u = np.max(maps, axis=0)
    return np.clip(u / u.max(), 0, 1)


def ref_kl(a, g):
    def dist(x):
        x = np.clip(np.nan_to_num(x.astype(np.float64)), 0, None) + 1e-8
        return x / x.sum()
    p, q = dist(g), dist(a)
    return np.sum(p * (np.log(p) - np.log(q)))


# ----------------------------------------------------------------- thresholding


def test_k_table_spec():
    ks = M.threshold_counts(224 * 224, PCTS)
    assert ks.tolist() == [5018, 7526, 10035, 12544, 15053, 20070, 25088]
    assert M.threshold_counts(224 * 224, (0, 100)).tolist() == [50176, 1]
    # Python round is half-to-even: 10·0.75 = 7.5 → 8, 10·0.65 = 6.5 → 6
    assert M.threshold_counts(10, (25, 35)).tolist() == [8, 6]


def test_threshold_masks_exact_count_and_tie_rule():
    maps, *_ = _world(1)
    tm = np.asarray(M.threshold_masks(maps, (*PCTS, 0, 100)))
    for i in range(maps.shape[0]):
        for l_ in range(maps.shape[1]):
            for j, p in enumerate((*PCTS, 0, 100)):
                np.testing.assert_array_equal(tm[i, l_, j], ref_topmask(maps[i, l_], p))
                assert tm[i, l_, j].sum() == ref_k(N, p)


def test_nan_ranks_last_and_negative_zero_equals_zero():
    a = np.zeros((4, 4), np.float32)
    a[0, 0] = np.nan
    a[0, 1] = -0.0
    a[3, 3] = 1.0
    order = np.asarray(M.descending_order(a))
    assert order[0] == 15 and order[-1] == 0  # NaN last
    assert order[1] == 1  # -0.0 ties with 0.0, index order
    np.testing.assert_array_equal(np.asarray(M.pixel_ranks(a)).ravel()[order], np.arange(16))


def test_float16_packed_sort_path_equals_the_float32_rule():
    maps, *_ = _world(15)
    m16 = maps.astype(np.float16)
    m16[0, 0, 0, :4] = [np.nan, -0.0, np.inf, -np.inf]
    m16[1, 0, 3] = 0
    got = np.asarray(M.descending_order(m16))
    want = np.asarray(M.descending_order(m16.astype(np.float32)))
    np.testing.assert_array_equal(got, want)
    for i, l_ in [(0, 0), (1, 0), (2, 1)]:
        v = m16[i, l_].astype(np.float32).ravel()
        ref = np.argsort(-np.where(np.isnan(v), -np.inf, v) + 0.0, kind="stable")
        np.testing.assert_array_equal(got[i, l_], ref)
    bf = np.asarray(M.top_order(M.ranking_values(maps).astype("bfloat16"), 50))
    np.testing.assert_array_equal(
        bf, np.asarray(M.top_order(M.ranking_values(maps).astype("bfloat16")
                                   .astype(np.float32), 50)))


# ----------------------------------------------------------------- IoU family, pointing


def test_alignment_grid_matches_numpy_loop():
    maps, _edges, valid, boxes_px, masks = _world(2)
    targets = np.stack([ref_gaussian(b, v, H, W) for b, v in zip(boxes_px, valid,
                                                                  strict=True)])
    np.testing.assert_array_equal(  # tolerance 0 (the grid below runs with 2)
        M.pointing_hit(maps, masks[:, None]),
        [[float(masks[i].ravel()[np.argmax(maps[i, l_])]) for l_ in range(3)] for i in range(4)])
    for tol in (2,):
        out = {k: np.asarray(v) for k, v in
               M.alignment_grid(maps, masks, targets.astype(np.float32), PCTS,
                                tolerance=tol, batch_size=3).items()}
        for i in range(maps.shape[0]):
            for l_ in range(maps.shape[1]):
                a, g = maps[i, l_], masks[i]
                for p in PCTS:
                    assert out[f"iou@{p}"][i, l_] == pytest.approx(ref_iou(ref_topmask(a, p), g),
                                                                   abs=1e-6)
                assert out["coverage"][i, l_] == pytest.approx(ref_coverage(a, g), abs=1e-6)
                y, x = divmod(int(np.argmax(a)), W)  # numpy argmax: first maximum
                assert out["pointing"][i, l_] == float(ref_dilated_at(g, y, x, tol))
                t = targets[i]
                assert out["mse"][i, l_] == pytest.approx(
                    np.mean((np.clip(a, 0, 1) - np.clip(t, 0, 1)) ** 2), abs=1e-6)
                assert out["kl"][i, l_] == pytest.approx(ref_kl(a, t), rel=1e-4, abs=1e-5)
                assert out["annotation_area"][i, l_] == pytest.approx(g.mean())


def test_grid_equals_primitives_and_float16_input():
    maps, _, _, _, masks = _world(3, ties=False)
    iou, att, _ann = M.iou_at_percentiles(maps, masks[:, None], PCTS)
    np.testing.assert_allclose(att, M.threshold_counts(N, PCTS) / N)
    grid = M.alignment_grid(maps, masks, None, PCTS)
    assert "mse" not in grid
    for j, p in enumerate(PCTS):
        np.testing.assert_allclose(grid[f"iou@{p}"], iou[..., j], atol=1e-7)
    np.testing.assert_allclose(grid["coverage"], M.coverage(maps, masks[:, None]), atol=1e-6)
    np.testing.assert_allclose(grid["pointing"], M.pointing_hit(maps, masks[:, None]))
    m16 = maps.astype(np.float16)
    g16 = M.alignment_grid(m16, masks, None, (90,))
    np.testing.assert_allclose(g16["iou@90"],
                               M.iou(m16.astype(np.float32), masks[:, None], 90), atol=1e-7)


def test_grid_middle_axes_and_batch_size():
    maps, _, _, _, masks = _world(3, ties=False)  # the shapes of the test above: cached
    b = M.alignment_grid(maps, masks, None, PCTS)
    a = M.alignment_grid(maps.reshape(4, 3, 1, H, W), masks, None, PCTS, batch_size=3)
    assert a["iou@90"].shape == (4, 3, 1)
    np.testing.assert_array_equal(np.asarray(a["iou@90"])[..., 0], b["iou@90"])


def test_empty_union_iou_zero_and_coverage_of_zero_map():
    a = np.zeros((1, H, W), np.float32)
    g = np.zeros((1, H, W), bool)
    # issue 12: the all-zero map is degenerate, NaN in every metric (was 0.0 and 0.0)
    assert np.isnan(float(M.iou(a, g, 90)[0]))
    assert np.isnan(float(M.coverage(a, np.ones_like(g))[0]))
    tiny = a.copy()
    tiny[0, 0, 0] = 1e-9  # a real map: IoU 0 with an empty mask, coverage 0 below 1e-8 energy
    assert float(M.iou(tiny, g, 90)[0]) == 0.0
    assert float(M.coverage(tiny, np.ones_like(g))[0]) == 0.0


def test_box_iou_pointing_and_top_k_match_loops():
    maps, edges, valid, _, masks = _world(5)
    bi = np.asarray(M.box_iou(maps, edges, valid, (90, 50)))
    bp = np.asarray(M.box_pointing(maps, edges, valid, tolerance=1))
    tk = np.asarray(M.top_k_pointing(maps, masks[:, None], k=7, tolerance=1))
    for i in range(maps.shape[0]):
        for l_ in range(maps.shape[1]):
            a = maps[i, l_]
            y, x = divmod(int(np.argmax(a)), W)
            order = np.argsort(-a.ravel(), kind="stable")[:7]
            assert tk[i, l_] == sum(ref_dilated_at(masks[i], *divmod(int(o), W), 1)
                                    for o in order)
            for k in range(edges.shape[1]):
                if not valid[i, k]:
                    assert np.isnan(bi[i, l_, :, k]).all() and np.isnan(bp[i, l_, k])
                    continue
                x1, y1, x2, y2 = edges[i, k]
                b = np.zeros((H, W), bool)
                b[y1:y2, x1:x2] = True
                for j, p in enumerate((90, 50)):
                    assert bi[i, l_, j, k] == pytest.approx(ref_iou(ref_topmask(a, p), b),
                                                            abs=1e-6)
                assert bp[i, l_, k] == float(ref_dilated_at(b, y, x, 1))


def test_corloc_and_by_label_any():
    ious = np.array([[0.6, 0.2], [0.5, np.nan], [0.1, 0.9]])
    np.testing.assert_allclose(M.corloc(ious), [2 / 3, 0.5])
    hits = np.array([[1.0, 0.0, np.nan], [0.0, 0.0, 1.0]])
    labels = np.array([[3, 3, 0], [1, 3, 1]])
    valid = np.array([[True, True, False], [True, True, True]])
    out = np.asarray(M.by_label_any(hits, labels, valid, 4))
    np.testing.assert_array_equal(np.isnan(out), [[1, 1, 1, 0], [1, 0, 1, 0]])
    assert out[0, 3] == 1.0 and out[1, 1] == 1.0 and out[1, 3] == 0.0


# ----------------------------------------------------------------- continuous


def test_gaussian_targets_match_formula():
    _, _, valid, boxes_px, _ = _world(6)
    t = np.asarray(M.gaussian_targets(boxes_px, valid, H, W))
    for i in range(len(valid)):
        np.testing.assert_allclose(t[i], ref_gaussian(boxes_px[i], valid[i], H, W), atol=2e-6)
    assert np.asarray(M.gaussian_targets(np.zeros((0, 4)), np.zeros(0, bool), H, W)).max() == 0
    # the normalised-box wrapper is the same soft target
    nb = boxes_px[0] / np.array([W, H, W, H])
    np.testing.assert_allclose(M.gaussian_target(nb[valid[0]], H, W), t[0], atol=1e-6)


def test_identity_gives_zero_mse_kl_emd():
    _, _, valid, boxes_px, _ = _world(7)
    t = np.asarray(M.gaussian_targets(boxes_px, valid, H, W))
    np.testing.assert_allclose(M.mse(t, t), 0, atol=0)
    np.testing.assert_allclose(M.kl_target_attention(t, t), 0, atol=1e-6)
    np.testing.assert_allclose(M.emd(t, t), 0, atol=1e-12)


def ref_emd_grid(a, size=8):
    """torch bilinear (align_corners=False, no antialias), written out per output cell."""
    h, w = a.shape
    a = np.clip(np.nan_to_num(a.astype(np.float64)), 0, None)

    def taps(o, n_in):
        src = max((n_in / size) * (o + 0.5) - 0.5, 0.0)
        i0 = min(int(src), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    out = np.zeros((size, size))
    for i in range(size):
        y0, y1, ly = taps(i, h)
        for j in range(size):
            x0, x1, lx = taps(j, w)
            out[i, j] = ((1 - ly) * ((1 - lx) * a[y0, x0] + lx * a[y0, x1])
                         + ly * ((1 - lx) * a[y1, x0] + lx * a[y1, x1]))
    return out


def test_emd_grid_224_is_point_sampled_2x2_means():
    r = np.random.default_rng(8)
    a = r.random((224, 224)).astype(np.float32)
    g = np.asarray(M.emd_grids(a))
    expect = np.array([[a[28 * i + 13:28 * i + 15, 28 * j + 13:28 * j + 15].mean()
                        for j in range(8)] for i in range(8)])
    np.testing.assert_allclose(g, expect, rtol=1e-5)
    b = r.random((H, W)).astype(np.float32)
    np.testing.assert_allclose(M.emd_grids(b), ref_emd_grid(b), rtol=1e-5, atol=1e-7)


def test_emd_matches_scipy_wasserstein_nd():
    maps, _, valid, boxes_px, _ = _world(9, images=3, layers=2, ties=False)
    t = np.asarray(M.gaussian_targets(boxes_px, valid, H, W))
    got = M.emd(maps, t[:, None])
    c = (np.arange(8) + 0.5) / 8
    support = np.stack(np.meshgrid(c, c, indexing="ij"), -1).reshape(-1, 2)
    for i in range(3):
        for l_ in range(2):
            u = M.normalize_transport_weights(ref_emd_grid(maps[i, l_]))
            v = M.normalize_transport_weights(ref_emd_grid(t[i]))
            ref = scipy.stats.wasserstein_distance_nd(support, support, u, v)
            assert got[i, l_] == pytest.approx(ref, abs=1e-6)
    # a unit point mass moved by one cell costs 1/8 of the side
    a = np.zeros((8, 8), np.float32)
    b = np.zeros((8, 8), np.float32)
    a[2, 3], b[2, 4] = 1, 1
    assert M.emd(a, b) == pytest.approx(1 / 8)


# ----------------------------------------------------------------- localisation


def test_quantus_metrics_match_references():
    maps, _, _, _, masks = _world(10)
    masks[0] = False  # empty mask → NaN, never a hit
    rma = np.asarray(M.relevance_mass_accuracy(maps, masks[:, None]))
    rra = np.asarray(M.relevance_rank_accuracy(maps, masks[:, None]))
    auc = np.asarray(M.roc_auc(maps, masks[:, None]))
    assert np.isnan(rma[0]).all() and np.isnan(rra[0]).all() and np.isnan(auc[0]).all()
    for i in range(1, maps.shape[0]):
        for l_ in range(maps.shape[1]):
            a, g = maps[i, l_], masks[i]
            assert rma[i, l_] == pytest.approx(np.abs(a)[g].sum() / np.abs(a).sum(), rel=1e-5)
            k = g.sum()
            top = np.argsort(-a.ravel(), kind="stable")[:k]
            assert rra[i, l_] == pytest.approx(g.ravel()[top].sum() / k)
            assert auc[i, l_] == pytest.approx(roc_auc_score(g.ravel(), a.ravel()), abs=1e-5)
    assert np.isnan(float(M.roc_auc(maps[1, 0], np.ones((H, W), bool))))


def test_mass_threshold_matches_dino_rule():
    maps, _, _, _, masks = _world(11, ties=False)
    got = np.asarray(M.mass_threshold_mask(maps, 0.6))
    jac = np.asarray(M.mass_jaccard(maps, masks[:, None], 0.6))
    for i in range(maps.shape[0]):
        for l_ in range(maps.shape[1]):
            a = maps[i, l_].ravel().astype(np.float64)
            idx = np.argsort(a)  # DINO: ascending sort, keep cumval > 1 - t
            cum = np.cumsum(a[idx] / a.sum())
            keep = np.zeros(a.size, bool)
            keep[idx] = cum > 1 - 0.6
            np.testing.assert_array_equal(got[i, l_].ravel(), keep)
            g = masks[i].ravel()
            assert jac[i, l_] == pytest.approx((keep & g).sum() / (keep | g).sum())
    assert not np.asarray(M.mass_threshold_mask(np.zeros((4, 4)), 0.6)).any()


def _components(mask):
    """Plain flood fill, 4-neighbourhood, components in raster order of their first pixel."""
    seen = np.zeros_like(mask)
    comps = []
    for y, x in zip(*np.nonzero(mask), strict=True):
        if seen[y, x]:
            continue
        stack, pix = [(y, x)], []
        seen[y, x] = True
        while stack:
            cy, cx = stack.pop()
            pix.append((cy, cx))
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] \
                        and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        comps.append(np.array(pix))
    return comps


def test_box_from_mask_and_lost_corloc():
    maps, edges, valid, _, _ = _world(12, ties=False)
    tm = np.asarray(M.threshold_masks(maps, (93,)))[:, :, 0]
    boxes = M.box_from_mask(tm)
    for i in range(tm.shape[0]):
        for l_ in range(tm.shape[1]):
            comps = _components(tm[i, l_])
            best = max(comps, key=len)  # max() keeps the first of equal sizes
            ys, xs = best[:, 0], best[:, 1]
            assert boxes[i, l_].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    assert M.box_from_mask(np.zeros((3, 3), bool)).tolist() == [0, 0, 0, 0]
    corloc = M.lost_corloc(boxes, edges, valid)
    for i in range(tm.shape[0]):
        for l_ in range(tm.shape[1]):
            p = boxes[i, l_]
            hit = False
            for k in range(edges.shape[1]):
                if not valid[i, k]:
                    continue
                e = edges[i, k]
                iw = max(0, min(p[2], e[2]) - max(p[0], e[0]))
                ih = max(0, min(p[3], e[3]) - max(p[1], e[1]))
                union = (p[2] - p[0]) * (p[3] - p[1]) + (e[2] - e[0]) * (e[3] - e[1]) - iw * ih
                hit |= iw * ih / union >= 0.5
            assert corloc[i, l_] == float(hit)
    # an exact match is a hit
    assert M.lost_corloc(edges[:, :1], edges, valid)[:, 0].tolist() == [1.0] * 4


# ----------------------------------------------------------------- aggregation


def test_segment_stats_by_feature_and_style():
    r = np.random.default_rng(13)
    vals = r.random((6, 2, 3))  # (I, layers, K)
    labels = r.integers(0, 4, (6, 3))
    valid = r.random((6, 3)) > 0.3
    vals[0, 0, 0] = np.nan
    st = M.by_feature(vals, labels, valid, 5)
    for lab in range(5):
        for l_ in range(2):
            xs = [vals[i, l_, k] for i in range(6) for k in range(3)
                  if valid[i, k] and labels[i, k] == lab and np.isfinite(vals[i, l_, k])]
            assert st.count[lab, l_] == len(xs)
            if not xs:
                assert np.isnan(st.mean[lab, l_])
                continue
            assert st.mean[lab, l_] == pytest.approx(np.mean(xs), rel=1e-5)
            sd = np.std(xs, ddof=1) if len(xs) > 1 else 0.0
            assert st.std[lab, l_] == pytest.approx(sd, rel=1e-4, abs=1e-6)
    per_image = r.random((6, 2))
    first = np.array([0, 1, -1, 1, 2, 0])
    s1 = M.by_style(per_image, first, 4)
    np.testing.assert_allclose(s1.mean[1], per_image[[1, 3]].mean(0), rtol=1e-6)
    assert np.isnan(s1.mean[3]).all() and s1.count[0, 0] == 2
    member = np.zeros((6, 4), bool)
    member[[0, 1, 1, 5], [0, 0, 2, 0]] = True
    s2 = M.by_style(per_image, member, 4)
    np.testing.assert_allclose(s2.mean[0], per_image[[0, 1, 5]].mean(0), rtol=1e-6)
    assert float(M.lower_median(np.array([4.0, 1.0, 3.0, 2.0]))) == 2.0
    x = r.random((7, 3))
    x[2, 1] = np.nan
    d = M.describe(x)
    col = x[:, 1][np.isfinite(x[:, 1])]
    assert d.count.tolist() == [7, 6, 7]
    assert d.mean[1] == pytest.approx(col.mean()) and d.std[1] == pytest.approx(col.std(ddof=1))
    assert d.std_pop[0] == pytest.approx(x[:, 0].std()) and d.median[1] == np.sort(col)[2]
    assert d.median[0] == pytest.approx(np.median(x[:, 0]))


# ----------------------------------------------------------------- bad inputs


def test_bad_inputs_have_clear_errors():
    maps, edges, valid, _, masks = _world(14)
    with pytest.raises(ValueError, match=r"percentile 101 outside \[0, 100\]"):
        M.threshold_counts(N, (90, 101))
    with pytest.raises(ValueError, match=r"percentile -5 outside"):
        M.alignment_grid(maps, masks, None, (-5,))
    with pytest.raises(ValueError, match="maps are 24x30 but masks are 24x29"):
        M.iou_at_percentiles(maps, masks[..., :-1], PCTS)
    with pytest.raises(ValueError, match="maps have 4 images but masks have 3"):
        M.alignment_grid(maps, masks[:3])
    with pytest.raises(ValueError, match="masks must be bool"):
        M.alignment_grid(maps, masks.astype(np.float32))
    with pytest.raises(ValueError, match=r"targets must be \(I, H, W\)"):
        M.alignment_grid(maps, masks, np.zeros((4, H, W + 1), np.float32))
    with pytest.raises(ValueError, match="tolerance must be a non-negative integer"):
        M.pointing_hit(maps, masks[:, None], tolerance=-1)
    with pytest.raises(ValueError, match=r"box edges must be \(..., K, 4\)"):
        M.box_iou(maps, edges[..., :3], valid, (90,))
    with pytest.raises(ValueError, match="box validity mask must be"):
        M.box_pointing(maps, edges, valid[:, :2])
    with pytest.raises(ValueError, match="must have the same H x W"):
        M.mse(maps, masks[..., :5].astype(np.float32))
    with pytest.raises(ValueError, match="mass fraction must be in"):
        M.mass_threshold_mask(maps, 1.5)
    with pytest.raises(ValueError, match="labels must be"):
        M.segment_stats(np.zeros(5), np.zeros(4, int), 3)
