"""Pin each model's LayerNorm eps and activation variant: errors a loose parity bar would hide
(SPEC A11: tanh-GELU instead of erf, or eps 1e-6 instead of 1e-12, shift hidden states by
less than 1e-4)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from transformers.activations import ACT2FN

from ssl_jax.models.config import bundled_checkpoint_files, bundled_spec, vision_config
from ssl_jax.models.layers import activation_fn, layer_norm

EXPECTED = {  # alias: (layer-norm eps, our activation, transformers' hidden_act)
    "dinov2": (1e-6, "gelu", "gelu"),
    "dinov3": (1e-5, "gelu", "gelu"),
    "mae": (1e-12, "gelu", "gelu"),
    "clip": (1e-5, "quick_gelu", "quick_gelu"),
    "siglip2": (1e-6, "gelu_tanh", "gelu_pytorch_tanh"),
}


@pytest.mark.parametrize("alias", EXPECTED)
def test_spec_pins_eps_and_activation(alias):
    eps, act, hf_act = EXPECTED[alias]
    spec = bundled_spec(alias)
    assert spec.layer_norm_eps == eps
    assert spec.activation == act
    # and the bundled config (with transformers' class defaults applied) says the same
    _, cfg = vision_config(bundled_checkpoint_files(alias)["config"])
    assert cfg["hidden_act"] == hf_act and cfg["layer_norm_eps"] == eps


@pytest.mark.parity
@pytest.mark.parametrize("alias", EXPECTED)
def test_activation_matches_transformers_and_not_the_others(alias):
    _, act, hf_act = EXPECTED[alias]
    x = np.linspace(-6, 6, 2001, dtype=np.float32)
    theirs = ACT2FN[hf_act](torch.from_numpy(x)).numpy()
    ours = np.asarray(activation_fn(act)(jnp.asarray(x)))
    assert np.abs(ours - theirs).max() < 1e-6
    for other in {"gelu", "gelu_tanh", "quick_gelu"} - {act}:
        wrong = np.asarray(activation_fn(other)(jnp.asarray(x)))
        assert np.abs(wrong - theirs).max() > 1e-4, f"{other} is indistinguishable from {act}"


@pytest.mark.parity
@pytest.mark.parametrize("alias", EXPECTED)
def test_layer_norm_eps_matters_and_matches_torch(alias):
    """Tiny activations: their variance (1e-12) is at the scale where eps dominates."""
    eps = EXPECTED[alias][0]
    x = (1e-6 * np.random.default_rng(0).normal(size=(4, 768))).astype(np.float32)
    scale = np.ones(768, np.float32)
    bias = np.zeros(768, np.float32)
    theirs = torch.nn.functional.layer_norm(torch.from_numpy(x), (768,), torch.from_numpy(scale),
                                            torch.from_numpy(bias), eps).numpy()
    ln = lambda e: np.asarray(layer_norm(e, jnp.float32).apply(  # noqa: E731
        {"params": {"scale": scale, "bias": bias}}, jnp.asarray(x)))
    spec_eps = bundled_spec(alias).layer_norm_eps
    np.testing.assert_allclose(ln(spec_eps), theirs, rtol=0, atol=1e-4 * np.abs(theirs).max())
    for other in {1e-12, 1e-6, 1e-5} - {eps}:
        theirs_other = torch.nn.functional.layer_norm(
            torch.from_numpy(x), (768,), torch.from_numpy(scale), torch.from_numpy(bias),
            other).numpy()
        assert np.abs(theirs_other - theirs).max() > 0.1 * np.abs(theirs).max()
