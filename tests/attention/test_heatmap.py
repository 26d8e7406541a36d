"""Heatmap utilities (SPEC R2.7): upsampling vs torch, min-max, the original-image frame."""

from __future__ import annotations

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ssl_jax import Transform
from ssl_jax.attention import minmax_normalize, to_heatmap, to_original_frame, upsample

UPSAMPLE_TOL = 1e-6


def torch_bilinear(maps: np.ndarray, size) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(maps, np.float32))
    lead = t.shape[:-2]
    t = t.reshape(-1, 1, *t.shape[-2:])
    out = torch.nn.functional.interpolate(t, size=tuple(size), mode="bilinear",
                                          align_corners=False)
    return out.reshape(*lead, *size).numpy()


@pytest.mark.parity
@pytest.mark.parametrize("grid", [14, 16])
def test_upsample_matches_torch(grid, rng):
    maps = rng.random((2, 3, grid, grid), dtype=np.float32)  # (B, layers, h, w)
    ours = np.asarray(upsample(maps, (224, 224)))
    ref = torch_bilinear(maps, (224, 224))
    assert ours.shape == ref.shape == (2, 3, 224, 224)
    err = np.abs(ours - ref).max()
    assert err <= UPSAMPLE_TOL, f"{grid}x{grid} -> 224 max abs diff {err:.2e}"


def test_heatmap_is_the_study_formula(rng):
    """attention_to_heatmap: interpolate, then (x - min) / (max - min + 1e-8) per map."""
    maps = rng.random((3, 14, 14), dtype=np.float32) * 0.01
    ref = torch_bilinear(maps, (224, 224))
    lo, hi = ref.min(axis=(1, 2), keepdims=True), ref.max(axis=(1, 2), keepdims=True)
    want = (ref - lo) / (hi - lo + 1e-8)
    got = np.asarray(jax.jit(to_heatmap, static_argnames=("size", "normalize"))(maps))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert got.min() == 0.0 and got.max() < 1.0
    np.testing.assert_array_equal(to_heatmap(maps, normalize=False), upsample(maps))
    flat = minmax_normalize(np.full((1, 4, 4), 3.0, np.float32))  # constant map: eps keeps it 0
    np.testing.assert_array_equal(flat, np.zeros((1, 4, 4)))
    # non-square sizes
    odd = rng.random((1, 14, 15), dtype=np.float32)
    np.testing.assert_allclose(upsample(odd, (224, 240)), torch_bilinear(odd, (224, 240)),
                               rtol=0, atol=UPSAMPLE_TOL)


def test_original_frame_squash_is_upsampling(rng):
    """Squash (the whole image resized to the input): the original frame is a plain bilinear
    upsampling of the map to the original size."""
    grid = rng.random((2, 14, 14), dtype=np.float32)
    h, w = 300, 451
    squash = Transform((h, w), (224, 224), 224 / w, 224 / h)
    got = np.asarray(to_original_frame(grid, squash))
    np.testing.assert_allclose(got, np.asarray(upsample(grid, (h, w))), rtol=0, atol=1e-6)
    np.testing.assert_allclose(got, torch_bilinear(grid, (h, w)), rtol=0, atol=1e-6)


def test_original_frame_centre_crop(rng):
    """A pure centre crop (scale 1): the map lands on the crop window, the rest is filled."""
    m = rng.random((224, 224), dtype=np.float32)
    crop = Transform((224, 300), (224, 224), 1.0, 1.0, offset_x=38.0, offset_y=0.0)
    got = np.asarray(to_original_frame(m, crop, fill_value=-1.0))
    assert got.shape == (224, 300)
    np.testing.assert_allclose(got[:, 38:262], m, rtol=0, atol=1e-6)
    assert (got[:, :38] == -1.0).all() and (got[:, 262:] == -1.0).all()
    with pytest.raises(ValueError, match="expects maps"):
        to_original_frame(np.zeros(5, np.float32), crop)
