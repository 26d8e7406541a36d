"""Pieces of fine-tuning: schedule, class weights, weighted CE, decay mask."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.train import class_weights, schedule
from ssl_jax.train.optim import decay_mask, weighted_cross_entropy
from tests.support.tiny import tiny


def test_schedule_is_transformers_cosine_with_warmup():
    total, warm, peak = 690, 69, 1e-5  # the published run: 3 epochs x 230 steps
    sched = schedule(peak, total, warm)
    for step in (0, 1, 35, 68, 69, 70, 300, 689, 690):
        if step < warm:
            want = peak * step / warm
        else:
            want = peak * 0.5 * (1 + math.cos(math.pi * (step - warm) / (total - warm)))
        assert float(sched(step)) == pytest.approx(want, rel=1e-5, abs=1e-12), step


def test_class_weights_of_the_published_split():
    labels = np.repeat(np.arange(4), [1214, 1216, 137, 1104])
    np.testing.assert_allclose(class_weights(labels, 4), [0.3345, 0.3339, 2.9638, 0.3678],
                               atol=1e-4)


@pytest.mark.parity
def test_weighted_cross_entropy_matches_torch_and_ignores_padding():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 4)).astype(np.float32)
    labels = np.asarray([0, 1, 2, 3, 2, 1])
    w = np.asarray([0.5, 1.0, 2.0, 0.5], np.float32)
    ref = torch.nn.CrossEntropyLoss(weight=torch.from_numpy(w))(
        torch.from_numpy(logits[:4]), torch.from_numpy(labels[:4]))
    mask = np.asarray([1, 1, 1, 1, 0, 0], np.float32)
    got = weighted_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), w, jnp.asarray(mask))
    assert float(got) == pytest.approx(float(ref), rel=1e-6)


def test_decay_mask_spares_norms_biases_and_tokens():
    m = tiny("dinov2", num_layers=1)
    tree = {"backbone": m.params, "head": {"kernel": 0, "bias": 0}, "lora": {"q": {"a": 0, "b": 0}}}
    mask = decay_mask(tree, decay_norms_and_biases=False)
    assert mask["backbone"]["blocks"]["attn"]["qkv"]["kernel"] is True
    assert mask["backbone"]["blocks"]["attn"]["qkv"]["bias"] is False
    assert mask["backbone"]["blocks"]["norm1"]["scale"] is False
    assert mask["backbone"]["blocks"]["ls1"] is False
    assert mask["backbone"]["embed"]["cls"] is False
    assert mask["head"] == {"kernel": True, "bias": False}
    assert mask["lora"]["q"] == {"a": True, "b": True}
    assert all(jax.tree.leaves(decay_mask(tree, decay_norms_and_biases=True)))
