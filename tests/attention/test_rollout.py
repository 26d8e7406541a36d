"""Attention rollout (SPEC R2.5): hand cases, every knob against a plain numpy implementation,
and the rollout fused into the forward pass against rollout from the full attentions."""

from __future__ import annotations

import numpy as np
import pytest

import ssl_jax
from ssl_jax.attention import RolloutOptions, attention_map, rollout, rollout_cls_rows, rollout_map
from ssl_jax.models.spec import TokenLayout
from tests.support.tiny import CLS_ALIASES, images, random_attention, tiny

# ---- an independent, deliberately plain reference ------------------------------------------

def numpy_rollout(att, fusion="mean", head_indices=None, residual_weight=1.0,
                  discard_ratio=0.0, discard="matrix", start_layer=0, end_layer=None):
    """Loops over images and layers, float64; returns (R (B,T,T), CLS rows (B, L', T))."""
    att = np.asarray(att, np.float64)
    b, n_layers, _, t, _ = att.shape
    end = n_layers if end_layer is None else end_layer
    reduce = {"mean": np.mean, "max": np.max, "min": np.min}[fusion]
    joints, rows = [], []
    for i in range(b):
        joint = np.eye(t)
        row_i = []
        for layer in range(start_layer, end):
            a = att[i, layer]
            if head_indices is not None:
                a = a[list(head_indices)]
            f = reduce(a, axis=0)
            if discard_ratio > 0:
                f = f.copy()
                if discard == "matrix":
                    k = int(t * t * discard_ratio)
                    if k > 0:
                        threshold = np.sort(f.reshape(-1))[k - 1]
                        f[f < threshold] = 0.0
                else:
                    k = int(t * discard_ratio)
                    if k > 0:
                        for q in range(t):
                            threshold = np.sort(f[q])[k - 1]
                            f[q, f[q] < threshold] = 0.0
            f = f / (f.sum(axis=1, keepdims=True) + 1e-8)
            f = f + residual_weight * np.eye(t)
            f = f / (f.sum(axis=1, keepdims=True) + 1e-8)
            joint = f @ joint
            row_i.append(joint[0].copy())
        joints.append(joint)
        rows.append(np.stack(row_i))
    return np.stack(joints), np.stack(rows)


# ---- hand cases --------------------------------------------------------------------------

def test_identity_attention_rolls_out_to_e0():
    t, layout = 13, TokenLayout(True, 2, 2, 5)
    eye = np.broadcast_to(np.eye(t, dtype=np.float32), (2, 4, 3, t, t))
    e0 = np.eye(t, dtype=np.float32)[0]
    for opts in (RolloutOptions(), RolloutOptions(residual_weight=0.3, fusion="max"),
                 RolloutOptions(discard_ratio=0.5, discard="row", start_layer=1)):
        rows = rollout_cls_rows(eye, options=opts)
        np.testing.assert_allclose(rows, np.broadcast_to(e0, rows.shape), atol=1e-7)
        np.testing.assert_allclose(rollout(eye, options=opts), np.broadcast_to(np.eye(t), (2, t, t)),
                                   atol=1e-7)
    # with the identity only CLS carries weight: the patch map is all zeros
    np.testing.assert_allclose(rollout_map(eye, layout), np.zeros((2, 2, 5)), atol=1e-7)


def test_first_layer_is_half_attention_half_identity():
    """SPEC R2.5: rollout at layer 0 = 0.5·mean_heads(A_0) + 0.5·I on the CLS row."""
    att = random_attention(np.random.default_rng(0), (1, 2, 4, 9, 9))
    want = 0.5 * att[:, 0].mean(1)[:, 0] + 0.5 * np.eye(9)[0]
    np.testing.assert_allclose(rollout_cls_rows(att)[:, 0], want, rtol=1e-6, atol=1e-7)


KNOBS = {
    "default": {},
    "max": {"fusion": "max"},
    "min": {"fusion": "min"},
    "heads": {"head_indices": (3, 0, 2)},
    "residual0.5": {"residual_weight": 0.5},
    "residual0": {"residual_weight": 0.0},
    "discard-matrix": {"discard_ratio": 0.6},
    "discard-row": {"discard_ratio": 0.45, "discard": "row"},
    "start-end": {"start_layer": 1, "end_layer": 3},
    "all": {"fusion": "max", "head_indices": (1, 2), "residual_weight": 2.0,
            "discard_ratio": 0.3, "discard": "row", "start_layer": 1},
    "all-matrix": {"fusion": "min", "head_indices": (0, 3), "residual_weight": 0.7,
                   "discard_ratio": 0.25, "end_layer": 2},
}


@pytest.mark.parametrize("name", list(KNOBS))
def test_rollout_knobs_match_numpy(name):
    knobs = KNOBS[name]
    att = random_attention(np.random.default_rng(7), (2, 4, 4, 18, 18))
    want_joint, want_rows = numpy_rollout(att, **knobs)
    np.testing.assert_allclose(rollout(att, **knobs), want_joint, rtol=0, atol=1e-6)
    rows = rollout_cls_rows(att, options=RolloutOptions(**knobs))
    np.testing.assert_allclose(rows, want_rows, rtol=0, atol=1e-6)
    # the patch map (layout with 2 registers, a 3×5 grid) is the CLS row, prefix dropped
    layout = TokenLayout(True, 2, 3, 5)
    np.testing.assert_allclose(rollout_map(att, layout, **knobs),
                               want_rows[:, -1, 3:].reshape(2, 3, 5), rtol=0, atol=1e-6)


def test_rollout_errors():
    att = random_attention(np.random.default_rng(1), (1, 3, 2, 5, 5))
    with pytest.raises(ValueError, match="start_layer=2, end_layer=2"):
        rollout(att, start_layer=2, end_layer=2)
    with pytest.raises(ValueError, match="not both"):
        rollout(att, options=RolloutOptions(), fusion="max")
    with pytest.raises(ValueError, match="needs a CLS token"):
        rollout_map(att[..., 1:, 1:], TokenLayout(False, 0, 2, 2))
    with pytest.raises(ValueError, match="discard_ratio"):
        RolloutOptions(discard_ratio=1.0)
    with pytest.raises(ValueError, match=r"full attentions \(batch, layers, heads, T, T\)"):
        rollout(att[:, 0])


# ---- fused into the forward pass -----------------------------------------------------------

@pytest.mark.parametrize("alias", CLS_ALIASES)
def test_fused_rollout_equals_rollout_from_full(alias):
    model = tiny(alias)
    pixels = images(2, model.spec, cells=4)
    full = ssl_jax.forward(model, pixels, attentions="full")
    fused = ssl_jax.forward(model, pixels, attentions="rollout")
    want = rollout_cls_rows(full.attentions)  # (B, L, T), every layer
    assert fused.rollout.shape == want.shape
    assert fused.attentions is None and fused.cls_attentions is None
    err = float(np.abs(np.asarray(fused.rollout) - np.asarray(want)).max())
    assert err <= 1e-6, f"{alias}: fused vs from-full rollout max abs diff {err:.2e}"
    assert fused.attention_layers == tuple(range(model.spec.num_layers))
    np.testing.assert_allclose(attention_map(fused, "rollout"), attention_map(full, "rollout"),
                               rtol=0, atol=1e-6)
    # the last layer's CLS row against the numpy reference too
    _, ref_rows = numpy_rollout(full.attentions)
    np.testing.assert_allclose(want, ref_rows, rtol=0, atol=1e-6)


def test_fused_rollout_with_options():
    model = tiny("dinov2")
    pixels = images(2, model.spec, cells=4)  # the shapes of the test above: compiled once
    opts = RolloutOptions(fusion="max", head_indices=(0, 2), residual_weight=0.5,
                          discard_ratio=0.2, discard="row", start_layer=1)
    full = ssl_jax.forward(model, pixels, attentions="full")
    fused = ssl_jax.forward(model, pixels, attentions="rollout", rollout=opts)
    assert fused.attention_layers == (1, 2)
    want = rollout_cls_rows(full.attentions, options=opts)
    np.testing.assert_allclose(fused.rollout, want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(attention_map(full, "rollout", rollout_options=opts, layer=2),
                               attention_map(fused, "rollout", layer=2), rtol=0, atol=1e-6)
