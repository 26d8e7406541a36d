"""LoRA adapters: PEFT-shaped init, identity at start, merge == adapter forward for every
target projection, dropout from keys, target names."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.models.config import bundled_spec
from ssl_jax.train import LoraConfig, features, init_lora, merge
from ssl_jax.train.lora import num_adapter_params
from tests.support.tiny import tiny

SIZE = {"dinov2": 28, "dinov3": 32, "siglip2": 32, "clip": 32, "mae": 32}


def _pixels(alias, n=2):
    s = SIZE[alias]
    return jnp.asarray(np.random.default_rng(0).normal(size=(n, s, s, 3)), jnp.float32)


@functools.partial(jax.jit, static_argnames=("spec", "lora", "dropout_on"))
def _feats(params, adapters, pixels, key, *, spec, lora, dropout_on):
    keys = jax.random.split(key, pixels.shape[0])
    return jax.vmap(lambda x, k: features(spec, params, x, adapters=adapters, lora=lora,
                                          key=k if dropout_on else None))(pixels, keys)


@functools.partial(jax.jit, static_argnames=("spec",))
def _plain(params, pixels, *, spec):
    return jax.vmap(lambda x: features(spec, params, x))(pixels)


def _random_b(adapters, seed=0):
    rng = np.random.default_rng(seed)
    return {t: {"a": ab["a"], "b": jnp.asarray(0.2 * rng.normal(size=ab["b"].shape),
                                               jnp.float32)} for t, ab in adapters.items()}


def test_vit_b_adapter_count_matches_peft():
    # SPEC R5.2: 12 layers x 2 modules x (768*8 + 8*768) = 294,912
    spec = bundled_spec("dinov2")
    adapters = init_lora(spec, LoraConfig(), jax.random.key(0))
    assert num_adapter_params(adapters) == 294_912
    a = np.asarray(adapters["q"]["a"])
    assert a.shape == (12, 768, 8) and np.abs(a).max() <= 1 / np.sqrt(768)
    assert not np.asarray(adapters["v"]["b"]).any()


def test_fresh_adapters_leave_the_model_unchanged():
    m = tiny("dinov2", num_layers=2)
    cfg = LoraConfig(rank=4, dropout=0.0, targets=("q", "k", "v", "o", "fc1", "fc2"))
    adapters = init_lora(m.spec, cfg, jax.random.key(1))
    x = _pixels("dinov2")
    got = _feats(m.params, adapters, x, jax.random.key(0), spec=m.spec, lora=cfg,
                 dropout_on=False)
    np.testing.assert_allclose(got, _plain(m.params, x, spec=m.spec), rtol=0, atol=1e-6)


@pytest.mark.parametrize("alias", ["dinov3", "siglip2"])
def test_merge_equals_adapter_forward_for_every_target(alias):
    m = tiny(alias, num_layers=2)
    cfg = LoraConfig(rank=4, alpha=8.0, dropout=0.1, targets=("q", "k", "v", "o", "fc1", "fc2"))
    adapters = _random_b(init_lora(m.spec, cfg, jax.random.key(1)))
    x = _pixels(alias)
    via_adapters = _feats(m.params, adapters, x, jax.random.key(0), spec=m.spec, lora=cfg,
                          dropout_on=False)
    merged = _plain(merge(m.spec, m.params, adapters, cfg), x, spec=m.spec)
    base = _plain(m.params, x, spec=m.spec)
    assert float(jnp.abs(via_adapters - base).max()) > 1e-2  # the adapters do something
    np.testing.assert_allclose(merged, via_adapters, rtol=0, atol=1e-5)


def test_dropout_comes_from_the_key():
    m = tiny("dinov2", num_layers=2)
    cfg = LoraConfig(rank=4, dropout=0.5)
    adapters = _random_b(init_lora(m.spec, cfg, jax.random.key(1)))
    x = _pixels("dinov2")
    run = functools.partial(_feats, m.params, adapters, x, spec=m.spec, lora=cfg)
    a1 = run(jax.random.key(3), dropout_on=True)
    a2 = run(jax.random.key(3), dropout_on=True)
    b = run(jax.random.key(4), dropout_on=True)
    off = run(jax.random.key(3), dropout_on=False)
    np.testing.assert_array_equal(a1, a2)
    assert float(jnp.abs(a1 - b).max()) > 1e-4
    assert float(jnp.abs(a1 - off).max()) > 1e-4


def test_target_names():
    assert LoraConfig(targets=("value", "query")).targets == ("q", "v")
    assert LoraConfig(targets=("q_proj", "v_proj", "up_proj")).targets == ("q", "v", "fc1")
    assert LoraConfig().scale == 4.0
    with pytest.raises(ValueError, match="unknown LoRA target 'proj'"):
        LoraConfig(targets=("proj",))
    with pytest.raises(ValueError, match="rank"):
        LoraConfig(rank=0)
