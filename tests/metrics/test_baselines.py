"""Baseline maps (SPEC R4.4) against their formulas written out per pixel."""

from __future__ import annotations

import hashlib

import jax
import numpy as np
import pytest
from PIL import Image

from ssl_jax import metrics as M


def test_center_gaussian_formula_and_first_max():
    g = M.center_gaussian(224, 224)
    assert g.shape == (224, 224) and g.dtype == np.float32 and g.max() == 1.0
    s = 224 / 4
    for i, j in [(0, 0), (111, 111), (50, 170), (223, 5)]:
        ref = np.exp(-((i - 111.5) ** 2 + (j - 111.5) ** 2) / (2 * s**2))
        ref /= np.exp(-0.5 / (2 * s**2))  # the max sits at the 4 central pixels
        assert g[i, j] == pytest.approx(ref, rel=1e-6)
    y, x = M.argmax_yx(g)
    assert (int(y), int(x)) == (111, 111)  # ties → first maximum in row-major order


def test_saliency_prior_formula():
    h, w = 20, 30
    m = M.saliency_prior(h, w)
    s = max(h, w) / 3
    ref = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            g = np.exp(-((j - (w - 1) / 2) ** 2 + (i - (h - 1) / 2) ** 2) / (2 * s**2))
            dy = min(max(min(i, h - 1 - i) / ((h - 1) / 2), 0), 1)
            dx = min(max(min(j, w - 1 - j) / ((w - 1) / 2), 0), 1)
            ref[i, j] = g * min(dy, dx)
    np.testing.assert_allclose(m, ref / ref.max(), rtol=1e-6)
    assert m[0].max() == 0 and m[:, 0].max() == 0


def _sobel_loop(grey):
    sx = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32)
    sy = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], np.float32)
    p = np.pad(grey, 1, mode="reflect")
    gx = np.zeros_like(grey)
    gy = np.zeros_like(grey)
    for i in range(grey.shape[0]):
        for j in range(grey.shape[1]):
            win = p[i:i + 3, j:j + 3]
            gx[i, j] = np.sum(win * sx)
            gy[i, j] = np.sum(win * sy)
    mag = np.sqrt(gx**2 + gy**2)
    return mag / mag.max() if mag.max() > 0 else mag


def test_sobel_matches_the_original_double_loop():
    rgb = (np.random.default_rng(0).random((37, 53, 3)) * 255).astype(np.uint8)
    got = M.sobel_edges(rgb, 24, 32)
    grey = np.asarray(Image.fromarray(rgb).convert("L").resize((32, 24), Image.BICUBIC),
                      np.float32) / 255
    np.testing.assert_allclose(got, _sobel_loop(grey), atol=1e-6)
    np.testing.assert_allclose(M.sobel_edges(Image.fromarray(rgb), 24, 32), got)
    batch = np.stack([grey, grey[::-1]])
    np.testing.assert_allclose(M.sobel_magnitude(batch)[1], _sobel_loop(grey[::-1].copy()),
                               atol=1e-6)
    assert np.asarray(M.sobel_magnitude(np.ones((8, 8)))).max() == 0


def test_random_maps_seeded_per_image():
    key = jax.random.key(42)
    a = np.asarray(M.random_maps(key, 4, trials=4, height=8, width=8))
    b = np.asarray(M.random_maps(key, 2, trials=4, height=8, width=8))
    assert a.shape == (4, 4, 8, 8) and 0 <= a.min() and a.max() < 1
    np.testing.assert_array_equal(a[:2], b)  # image i does not depend on the batch
    assert not np.array_equal(a[0], a[1])
    ids = ["Q1_wd0.jpg", "Q2_wd0.jpg", "Q3_wd0.jpg", "Q4_wd0.jpg"]
    r1 = np.asarray(M.random_maps_for_ids(key, ids, trials=4, height=8, width=8))
    r2 = np.asarray(M.random_maps_for_ids(key, ids[::-1], trials=4, height=8, width=8))
    np.testing.assert_array_equal(r1, r2[::-1])  # order-independent
    assert M.image_seed("Q1_wd0.jpg") == int(hashlib.md5(b"Q1_wd0.jpg").hexdigest(), 16) % 2**31
    assert M.N_RANDOM_TRIALS == 100
    with pytest.raises(ValueError, match="trials"):
        M.random_maps(key, 2, trials=0)


def test_random_baseline_through_the_grid():
    """100 random trials per image in one grid call, averaged over trials (SPEC R4.4); MSE of
    U(0, 1) noise against a mostly-zero target is ≈ 1/3 (SPEC R9.22a)."""
    h = w = 32
    masks = np.zeros((3, h, w), bool)
    masks[:, 4:10, 6:14] = True
    edges = np.array([[[6, 4, 14, 10]]] * 3)
    targets = M.gaussian_targets(edges.astype(np.float32), np.ones((3, 1), bool), h, w)
    maps = M.random_maps(jax.random.key(0), 3, height=h, width=w)
    out = M.alignment_grid(maps, masks, targets, (90, 50))
    per_image = {k: np.asarray(v).mean(axis=1) for k, v in out.items()}
    assert per_image["mse"].shape == (3,)
    assert abs(per_image["mse"].mean() - 1 / 3) < 0.05
    area = masks[0].mean()
    # a random top-50% mask covers half of G on average: IoU ≈ .5A / (.5 + .5A)
    assert per_image["iou@50"].mean() == pytest.approx(0.5 * area / (0.5 + 0.5 * area), rel=0.1)
    assert per_image["coverage"].mean() == pytest.approx(area, rel=0.1)
