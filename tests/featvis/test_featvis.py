"""Activation maximisation on tiny versions of the five encoders: the target channel rises by
at least FACTOR × its random-start magnitude; negative optimisation lowers it; a key gives
bit-identical images."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from ssl_jax.featvis import Objective, VisConfig, random_affine, to_rgb, visualize
from tests.support.tiny import ALIASES, tiny

FACTOR = 2.0  # (final - start) >= FACTOR * |start|


@pytest.mark.slow
@pytest.mark.parametrize("alias", ALIASES)
def test_maximisation_raises_target(alias):
    m = tiny(alias, num_layers=2)
    p = m.spec.patch_size
    cfg = VisConfig(size=(4 * p, 4 * p), steps=40, jitter=2)
    obj = Objective("channel", 3, layer=-1)
    res = visualize(m, obj, jax.random.key(0), cfg)
    assert res.final - res.start >= FACTOR * abs(res.start), (res.start, res.final)
    assert res.image.shape == (4 * p, 4 * p, 3) and 0 <= res.image.min() <= res.image.max() <= 1
    if alias == "dinov2":  # same compile: negative direction and determinism
        neg = visualize(m, obj, jax.random.key(0), VisConfig(**{**cfg.__dict__, "sign": -1.0}))
        assert neg.start == res.start and neg.final < res.start - FACTOR * abs(res.start)
        again = visualize(m, obj, jax.random.key(0), cfg)
        np.testing.assert_array_equal(again.image, res.image)
        other = visualize(m, obj, jax.random.key(1), cfg)
        assert not np.array_equal(other.image, res.image)


def test_parameterisation_and_transform():
    spec = np.random.default_rng(0).normal(size=(2, 3, 16, 9)).astype(np.float32)
    img = jax.jit(to_rgb, static_argnums=1)(spec, (16, 16))
    assert img.shape == (16, 16, 3) and float(img.min()) > 0 and float(img.max()) < 1
    x = np.random.default_rng(1).uniform(size=(16, 16, 3)).astype(np.float32)
    same = jax.jit(lambda k, v: random_affine(k, v, jitter=0, scales=(1.0, 1.0), degrees=0.0))(
        jax.random.key(2), x)
    np.testing.assert_allclose(np.asarray(same), np.asarray(x), atol=1e-6)
