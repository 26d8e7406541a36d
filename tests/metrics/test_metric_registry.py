"""The metric registry (ssl_jax.metrics.registry) says what its functions do: the declared
direction, needs and empty-mask value are checked against the functions themselves, and the
fused grid's columns and values come from it."""

from __future__ import annotations

import numpy as np
import pytest

from ssl_jax import metrics as M
from ssl_jax.metrics import registry as R
from ssl_jax.metrics.masks import edges_to_masks, mask_edges

H, W = 24, 30
EDGES = np.array([[[6, 4, 16, 12], [18, 14, 26, 20]], [[3, 10, 12, 22], [0, 0, 0, 0]]],
                 np.int32)
VALID = np.array([[True, True], [True, False]])


def _world():
    masks = edges_to_masks(EDGES, (H, W))
    masks = (masks & VALID[..., None, None]).any(axis=1)  # (2, H, W) union masks
    px = EDGES.astype(np.float64)
    target = np.asarray(M.gaussian_targets(px, VALID, H, W))
    return masks, target


def _bump(cy, cx, sigma=3.0, seed=0):
    y, x = np.mgrid[:H, :W] + 0.5
    b = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma**2))
    return (b + 1e-3 * np.random.default_rng(seed).random((H, W))).astype(np.float32)


def _inputs(maps, masks, target, metric, p=90.0, tol=0):
    return metric.compute(maps, mask=masks[:, None], target=target[:, None], edges=EDGES,
                          valid=VALID, percentile=p if metric.per_percentile else None,
                          tolerance=tol)


def test_entries_are_the_exported_functions_with_declared_needs():
    assert len(R.METRICS) == len(set(R.METRICS))
    for name, m in R.METRICS.items():
        assert m.name == name
        assert getattr(M, m.function.__name__) is m.function, name
        assert m.needs <= R.NEEDS and m.needs, name
        assert m.better in ("higher", "lower")
        assert (m.empty is None) == ("target" in m.needs), name  # target metrics: scored
    assert [m.name for m in R.grid_metrics()] == ["iou", "coverage", "pointing", "mse", "kl"]
    assert [m.name for m in R.grid_metrics(with_target=False)] == ["iou", "coverage",
                                                                   "pointing"]
    assert {m for m, x in R.METRICS.items() if not x.higher_is_better} == {"mse", "kl", "emd"}


@pytest.mark.slow
def test_grid_columns_are_the_grid_outputs_and_values_match_compute():
    masks, target = _world()
    rng = np.random.default_rng(1)
    maps = rng.random((2, 3, H, W)).astype(np.float32)
    cols = R.grid_columns((90, 62.5, 50))
    assert cols == ("iou@90", "iou@62.5", "iou@50", "coverage", "pointing", "mse", "kl")
    grid = M.alignment_grid(maps, masks, target, (90, 62.5, 50), tolerance=1)
    assert set(grid) == {*cols, "annotation_area"}  # (a jitted dict comes back key-sorted)
    assert set(M.alignment_grid(maps, masks, None, (90,))) == {
        *R.grid_columns((90,), with_target=False), "annotation_area"}
    for col in cols:
        metric, p = R.parse_column(col)
        want = np.asarray(_inputs(maps, masks, target, metric, p, tol=1))
        np.testing.assert_allclose(grid[col], want, rtol=1e-5, atol=1e-6, err_msg=col)


@pytest.mark.slow
def test_direction_a_map_on_the_boxes_beats_one_off_them():
    masks, target = _world()
    on = np.stack([np.maximum(_bump(8, 11), _bump(17, 22)), _bump(16, 7.5)])
    off = np.stack([_bump(21, 2), _bump(2, 27)])
    maps = np.stack([on, off], axis=1)  # (2 images, 2 maps, H, W)
    for name, metric in R.METRICS.items():
        v = np.asarray(_inputs(maps, masks, target, metric), np.float64)
        if "boxes" in metric.needs:  # (I, maps, K): compare the valid boxes
            v = np.nanmean(np.where(VALID[:, None], v, np.nan), axis=-1)
        good, bad = v[:, 0], v[:, 1]
        assert np.isfinite(v).all(), name
        if metric.higher_is_better:
            assert (good > bad).all(), (name, good, bad)
        else:
            assert (good < bad).all(), (name, good, bad)


def test_degenerate_maps_are_nan_in_every_metric():
    masks, target = _world()
    fine = _bump(8, 11)
    maps = np.stack([np.full((H, W), np.nan, np.float32), np.zeros((H, W), np.float32)])
    maps = np.stack([maps, np.stack([np.full((H, W), 0.5, np.float32), fine])])  # (2, 2)
    for name, metric in R.METRICS.items():
        v = np.asarray(_inputs(maps, masks, target, metric), np.float64)
        v = v[..., 0] if "boxes" in metric.needs else v  # first box (valid in both images)
        assert np.isnan(v[0]).all() and np.isnan(v[1, 0]), name
        assert np.isfinite(v[1, 1]), name


@pytest.mark.slow
def test_empty_mask_value_is_the_declared_one():
    fine = np.stack([_bump(8, 11), _bump(16, 20, seed=1)])[None]  # (1, 2, H, W)
    empty = np.zeros((1, 1, H, W), bool)
    zero_target = np.zeros((1, 1, H, W), np.float32)
    no_boxes = np.zeros((1, 2, 4), np.int32), np.zeros((1, 2), bool)
    for name, metric in R.METRICS.items():
        v = np.asarray(metric.compute(fine, mask=empty, target=zero_target, edges=no_boxes[0],
                                      valid=no_boxes[1], percentile=90.0
                                      if metric.per_percentile else None), np.float64)
        if metric.empty is None:  # scored against the all-zero target
            assert np.isfinite(v).all(), name
        elif np.isnan(metric.empty):
            assert np.isnan(v).all(), name
        else:
            np.testing.assert_array_equal(v, metric.empty, err_msg=name)


def test_parse_column_direction_and_labels():
    assert R.parse_column("iou@90") == (R.METRICS["iou"], 90.0)
    assert R.parse_column("box_iou@92.5") == (R.METRICS["box_iou"], 92.5)
    assert R.parse_column("coverage") == (R.METRICS["coverage"], None)
    assert R.METRICS["iou"].column(90) == "iou@90" and R.METRICS["kl"].column() == "kl"
    for bad, match in [("iou", "unknown metric column"), ("coverage@90", "unknown metric"),
                       ("dice", "known: iou@<p>, coverage"), ("iou@x", "not a percentile"),
                       ("iou@150", r"outside \[0, 100\]")]:
        with pytest.raises(ValueError, match=match):
            R.parse_column(bad)
    with pytest.raises(ValueError, match="needs a percentile"):
        R.METRICS["iou"].column()
    with pytest.raises(ValueError, match="takes no percentile"):
        R.METRICS["mse"].column(90)
    assert [R.better(c) for c in ("iou@90", "coverage", "pointing", "mse", "kl", "emd")] == \
        ["higher"] * 3 + ["lower"] * 3
    assert R.higher_is_better("box_iou@90") and not R.higher_is_better("kl")
    assert R.axis_label("iou@90") == "IoU@90 (higher is better)"
    assert R.axis_label("kl") == "KL(target ‖ attention) (lower is better)"
    assert R.axis_label("box IoU@90") == "box IoU@90"  # not a column: as given


def test_compute_names_what_is_missing():
    maps = np.random.default_rng(0).random((2, 1, H, W)).astype(np.float32)
    with pytest.raises(ValueError, match="'iou' needs mask, percentile"):
        R.METRICS["iou"].compute(maps)
    with pytest.raises(ValueError, match="'box_iou' needs boxes, percentile, valid"):
        R.METRICS["box_iou"].compute(maps)
    with pytest.raises(ValueError, match="'kl' needs target"):
        R.METRICS["kl"].compute(maps, mask=np.ones((2, 1, H, W), bool))


def test_mask_edges_inverts_edges_to_masks_under_turns():
    e = np.array([[2, 3, 7, 5], [0, 0, 0, 0], [0, 0, 30, 24], [29, 23, 30, 24]], np.int32)
    m = edges_to_masks(e, (H, W))
    np.testing.assert_array_equal(mask_edges(m), e)
    sq = edges_to_masks(e[:1], (W, W))[0]
    for turned in (sq[::-1], sq[:, ::-1], sq.T, sq.T[::-1]):
        x1, y1, x2, y2 = mask_edges(turned)
        expect = np.zeros_like(turned)
        expect[y1:y2, x1:x2] = True
        np.testing.assert_array_equal(turned, expect)
