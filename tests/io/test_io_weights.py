"""`ssl_jax.io.weights.load_weights`: the one "load weights, else random weights"."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import ssl_jax
import ssl_jax.io.weights as W
from ssl_jax.models import CheckpointError


@pytest.fixture
def no_checkpoints(monkeypatch):
    def unavailable(source, **kwargs):
        raise CheckpointError(f"{source}: not in the Hugging Face cache")

    monkeypatch.setattr(W, "load_model", unavailable)


def test_missing_alias_weights_name_the_flag(no_checkpoints):
    with pytest.raises(W.WeightsUnavailable, match=r"no weights for 'mae': mae: not in the "
                       r"Hugging Face cache\..*--allow-random-weights"):
        W.load_weights("mae")


@pytest.mark.slow
def test_random_fallback_is_the_seeded_random_model(no_checkpoints):
    model, info = W.load_weights("mae", allow_random=True, seed=3)
    assert info["random"] and info["source"] == "random:mae" and info["seed"] == 3
    ref = ssl_jax.random_model("mae", 3)
    for a, b in zip(jax.tree.leaves(model.params), jax.tree.leaves(ref.params), strict=True):
        np.testing.assert_array_equal(a, b)
    assert W.random_note(info).startswith("warning: using RANDOM weights for mae (")


def test_a_folder_that_cannot_load_keeps_its_own_error(tmp_path):
    # no architecture to fall back on: the loader's error, even with random weights allowed
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        W.load_weights(tmp_path, allow_random=True)


def test_a_bug_in_loading_is_not_swallowed(monkeypatch):
    def bug(source, **kwargs):
        raise KeyError("oops")

    monkeypatch.setattr(W, "load_model", bug)
    with pytest.raises(KeyError):
        W.load_weights("mae", allow_random=True)


@pytest.mark.slow
def test_study_entry_adds_digest_and_size(no_checkpoints):
    model, info = W.resolve_model("mae", allow_random=True, seed=0)
    assert info["num_params"] == model.num_params and len(info["params_sha256"]) == 64
