"""Fine-tuning augmentation: identity and flip settings, keyed randomness."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.train import AugmentConfig, augment_one


def test_augmentation_identity_flip_and_keys():
    img = jnp.asarray(np.random.default_rng(0).uniform(size=(20, 24, 3)), jnp.float32)
    ident = AugmentConfig(scale=(1.0, 1.0), ratio=(24 / 20, 24 / 20), flip=0.0, brightness=0.0,
                          contrast=0.0)
    out = augment_one(jax.random.key(0), img, (20, 24), ident)
    np.testing.assert_allclose(out, img, rtol=0, atol=1e-6)
    flipped = augment_one(jax.random.key(0), img, (20, 24),
                          AugmentConfig(scale=(1.0, 1.0), ratio=(1.2, 1.2), flip=1.0,
                                        brightness=0.0, contrast=0.0))
    np.testing.assert_allclose(flipped, img[:, ::-1], rtol=0, atol=1e-6)
    a = augment_one(jax.random.key(1), img, (20, 24))
    b = augment_one(jax.random.key(1), img, (20, 24))
    c = augment_one(jax.random.key(2), img, (20, 24))
    np.testing.assert_array_equal(a, b)
    assert float(jnp.abs(a - c).max()) > 1e-3
    assert a.shape == (20, 24, 3) and float(a.min()) >= 0 and float(a.max()) <= 1
