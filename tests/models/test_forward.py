"""Forward-pass contracts that need no reference framework: modes, layers, shapes, errors."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import ssl_jax
from ssl_jax.models.config import bundled_spec
from ssl_jax.models.spec import ModelSpec


def tiny(alias: str, **changes) -> ssl_jax.Model:
    """The real architecture of `alias` shrunk to 3 layers × width 64 (fast, same code paths)."""
    base = bundled_spec(alias)
    spec: ModelSpec = base.replace(hidden_size=64, num_heads=4, mlp_dim=128, num_layers=3, **changes)
    return ssl_jax.random_model(spec, jax.random.key(7))


ALIASES = ("dinov2", "dinov3", "mae", "clip", "siglip2")
EXPECTED_TOKENS = {"dinov2": 1 + 4 + 256, "dinov3": 1 + 4 + 196, "mae": 197, "clip": 197,
                   "siglip2": 196}


@pytest.fixture(scope="module", params=ALIASES)
def model(request):
    return request.param, tiny(request.param)


@pytest.mark.slow
def test_layout_and_shapes(model, rng):
    alias, m = model
    x = rng.normal(size=(2, 224, 224, 3)).astype(np.float32)
    out = ssl_jax.forward(m, x, attentions="full", hidden_states=True)
    t = EXPECTED_TOKENS[alias]
    assert out.layout.num_tokens == t
    assert out.last_hidden_state.shape == (2, t, 64)
    assert out.hidden_states.shape == (2, 4, t, 64)
    assert out.attentions.shape == (2, 3, 4, t, t)
    np.testing.assert_allclose(np.asarray(out.attentions).sum(-1), 1.0, atol=1e-5)
    if alias == "mae":
        assert out.pooled is None
    else:
        assert out.pooled.shape == (2, 64)


@pytest.mark.slow
def test_cls_mode_equals_rows_of_full(model, rng):
    alias, m = model
    x = rng.normal(size=(2, 224, 224, 3)).astype(np.float32)
    full = ssl_jax.forward(m, x, attentions="full")
    cls = ssl_jax.forward(m, x, attentions="cls")
    assert cls.attentions is None and cls.rollout is None  # one field per kind, fixed rank
    if alias == "siglip2":
        # no CLS token: "cls" gives the MAP head's probe attention over all patches, in its
        # own field (heads, T) per image, and no per-layer rows
        assert cls.cls_attentions is None
        assert cls.probe_attention.shape == (2, 4, 196)
        assert full.probe_attention.shape == (2, 4, 196)
        # its layers ran the fast attention path, so equal to float noise, not bit for bit
        np.testing.assert_allclose(np.asarray(cls.probe_attention),
                                   np.asarray(full.probe_attention), rtol=0, atol=1e-6)
        assert cls.attention_layers == ()
    else:
        assert cls.probe_attention is None and full.probe_attention is None
        assert cls.cls_attentions.shape == (2, 3, 4, EXPECTED_TOKENS[alias])
        np.testing.assert_array_equal(np.asarray(cls.cls_attentions),
                                      np.asarray(full.attentions[:, :, :, 0, :]))
        assert cls.attention_layers == (0, 1, 2)


@pytest.mark.slow
def test_none_mode_gives_same_hidden_states(model, rng):
    _, m = model
    x = rng.normal(size=(2, 224, 224, 3)).astype(np.float32)
    full = ssl_jax.forward(m, x, attentions="full", hidden_states=True)
    none = ssl_jax.forward(m, x, attentions="none", hidden_states=True)
    assert none.attentions is None
    ref = np.asarray(full.hidden_states)
    err = np.abs(np.asarray(none.hidden_states) - ref).max() / np.abs(ref).max()
    assert err < 1e-6
    if full.pooled is not None:
        np.testing.assert_allclose(np.asarray(none.pooled), np.asarray(full.pooled), rtol=0,
                                   atol=1e-6 * float(np.abs(np.asarray(full.pooled)).max()))


@pytest.mark.slow
def test_layers_selection(rng):
    m = tiny("clip")
    x = rng.normal(size=(1, 224, 224, 3)).astype(np.float32)
    full = ssl_jax.forward(m, x, attentions="full")
    sel = ssl_jax.forward(m, x, attentions="full", layers=[-1, 0])
    assert sel.attention_layers == (0, 2)
    np.testing.assert_array_equal(np.asarray(sel.attentions),
                                  np.asarray(full.attentions[:, [0, 2]]))
    with pytest.raises(ValueError, match="layer 3 out of range for a 3-layer model"):
        ssl_jax.forward(m, x, attentions="full", layers=[3])


@pytest.mark.slow
def test_batch_is_independent_per_example(rng):
    """vmapped per-example forward: an image's output does not depend on its batch mates."""
    m = tiny("dinov3")
    x = rng.normal(size=(3, 224, 224, 3)).astype(np.float32)
    batched = np.asarray(ssl_jax.forward(m, x).last_hidden_state)
    single = np.asarray(ssl_jax.forward(m, x[1:2]).last_hidden_state)
    np.testing.assert_allclose(batched[1:2], single, atol=1e-5)


@pytest.mark.slow
def test_bfloat16_compute_is_close_to_float32(rng):
    m = tiny("dinov2")
    x = rng.normal(size=(1, 224, 224, 3)).astype(np.float32)
    f32 = ssl_jax.forward(m, x, attentions="full")
    bf16 = ssl_jax.forward(m, x, attentions="full", dtype="bfloat16")
    assert bf16.attentions.dtype == np.float32  # softmax stays float32
    assert np.abs(np.asarray(bf16.attentions) - np.asarray(f32.attentions)).max() < 0.05


@pytest.mark.slow
@pytest.mark.parametrize("shape,message", [
    ((2, 3, 224, 224), "NCHW input"),
    ((224, 224, 3), "batch \\(B, H, W, C\\)"),
    ((1, 230, 224, 3), "not a positive multiple of the patch size 16"),
])
def test_bad_pixels_are_named(shape, message):
    m = tiny("clip")
    with pytest.raises(ValueError, match=message):
        ssl_jax.forward(m, np.zeros(shape, np.float32))


@pytest.mark.slow
def test_bad_mode():
    with pytest.raises(ValueError, match="attentions must be"):
        ssl_jax.forward(tiny("clip"), np.zeros((1, 224, 224, 3), np.float32), attentions="all")


@pytest.mark.slow
def test_collectors_compose_and_keep_their_ranks(rng):
    """encode with several collectors at once: each field has its own fixed rank and equals
    what the collector gives alone; a collector the model cannot serve is refused."""
    from ssl_jax.models import collectors as C
    from ssl_jax.models.encoder import encode

    x = rng.normal(size=(224, 224, 3)).astype(np.float32)
    m = tiny("dinov2")
    t = EXPECTED_TOKENS["dinov2"]
    run = jax.jit(lambda p, x, collect: encode(m.spec, p, x, collect), static_argnums=2)
    both = run(m.params, x, (C.FullAttention((0, 2)), C.ClsAttention((2,)), C.Rollout(),
                             C.HiddenStates()))
    assert both["attentions"].shape == (2, 4, t, t)
    assert both["cls_attentions"].shape == (1, 4, t)
    assert both["rollout"].shape == (3, t)
    assert both["hidden_states"].shape == (4, t, 64)
    np.testing.assert_array_equal(np.asarray(both["cls_attentions"][0]),
                                  np.asarray(both["attentions"][1, :, 0]))  # layer 2 both
    alone = run(m.params, x, (C.Rollout(),))
    np.testing.assert_array_equal(np.asarray(both["rollout"]), np.asarray(alone["rollout"]))
    with pytest.raises(ValueError, match="two collectors produce"):
        encode(m.spec, m.params, x, (C.HiddenStates(), C.HiddenStates()))
    with pytest.raises(ValueError, match="ProbeAttention needs a MAP-head pooler"):
        encode(m.spec, m.params, x, (C.ProbeAttention(),))
    with pytest.raises(ValueError, match=r"layers \[3\] out of range"):
        encode(m.spec, m.params, x, (C.FullAttention((3,)),))
    s = tiny("siglip2")
    with pytest.raises(ValueError, match="ClsAttention needs a CLS token"):
        encode(s.spec, s.params, x, (C.ClsAttention(),))
    probe = encode(s.spec, s.params, x, (C.ProbeAttention(),))["probe_attention"]
    assert probe.shape == (4, 196)
