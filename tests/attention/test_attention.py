"""Attention maps (SPEC R2.1-R2.4): hand cases, layouts, and agreement with the raw tensors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ssl_jax
from ssl_jax.attention import (
    attention_map,
    cls_map,
    cls_row_map,
    fuse_heads,
    mean_map,
    probe_map,
    tokens_to_grid,
)
from ssl_jax.models.spec import TokenLayout
from tests.support.tiny import images, random_attention, tiny

# the four layouts of the study's models at 224×224
LAYOUTS = {
    "dinov2": (TokenLayout(True, 4, 16, 16), 261),
    "dinov3": (TokenLayout(True, 4, 14, 14), 201),
    "mae/clip": (TokenLayout(True, 0, 14, 14), 197),
    "siglip2": (TokenLayout(False, 0, 14, 14), 196),
}


# ---- hand cases ---------------------------------------------------------------------------

def test_fuse_heads_hand_case():
    # heads on axis 1: head0 = [1, 4, 0], head1 = [3, 2, 5], head2 = [2, 0, 7]
    x = jnp.array([[[1.0, 4.0, 0.0], [3.0, 2.0, 5.0], [2.0, 0.0, 7.0]]])
    np.testing.assert_allclose(fuse_heads(x, "mean", axis=1), [[2.0, 2.0, 4.0]])
    np.testing.assert_allclose(fuse_heads(x, "max", axis=1), [[3.0, 4.0, 7.0]])
    np.testing.assert_allclose(fuse_heads(x, "min", axis=1), [[1.0, 0.0, 0.0]])
    np.testing.assert_allclose(fuse_heads(x, "mean", [0, 2], axis=1), [[1.5, 2.0, 3.5]])
    np.testing.assert_allclose(fuse_heads(x, "max", [-1], axis=1), [[2.0, 0.0, 7.0]])
    np.testing.assert_allclose(fuse_heads(x, None, [2, 0], axis=1), x[:, [2, 0]])


def test_fuse_heads_errors():
    x = jnp.ones((1, 3, 4))
    with pytest.raises(ValueError, match=r"head indices \[3\] out of range for 3 heads"):
        fuse_heads(x, "mean", [0, 3], axis=1)
    with pytest.raises(ValueError, match="fusion must be one of"):
        fuse_heads(x, "median", axis=1)


@pytest.mark.parametrize("name", LAYOUTS)
def test_uniform_attention_mean_map_is_one_over_n(name):
    layout, t = LAYOUTS[name]
    assert layout.num_tokens == t
    att = jnp.full((2, 3, t, t), 1.0 / t)  # (B, heads, T, T)
    m = mean_map(att, layout)
    assert m.shape == (2, layout.grid_h, layout.grid_w)
    np.testing.assert_allclose(m, 1.0 / t, rtol=1e-6)
    if not layout.has_cls:  # SigLIP: all tokens are patches, so the map sums to 1
        np.testing.assert_allclose(m.sum((-2, -1)), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", LAYOUTS)
def test_prefix_offsets(name):
    """Token j carries the value j: the map must start at the first patch, row-major."""
    layout, t = LAYOUTS[name]
    first_patch = {"dinov2": 5, "dinov3": 5, "mae/clip": 1, "siglip2": 0}[name]
    expected = np.arange(first_patch, t, dtype=np.float32).reshape(layout.grid_h, layout.grid_w)
    coded = np.broadcast_to(np.arange(t, dtype=np.float32), (1, 2, t, t))  # every row = 0..T-1
    np.testing.assert_array_equal(mean_map(jnp.asarray(coded), layout)[0], expected)
    np.testing.assert_array_equal(tokens_to_grid(jnp.arange(t, dtype=jnp.float32), layout),
                                  expected)
    if layout.has_cls:
        # only row 0 (CLS as query) is coded; other rows are noise that must be ignored
        att = np.random.default_rng(0).random((1, 2, t, t)).astype(np.float32)
        att[:, :, 0] = np.arange(t)
        np.testing.assert_array_equal(cls_map(jnp.asarray(att), layout)[0], expected)
    else:
        with pytest.raises(ValueError, match="needs a CLS token"):
            cls_map(jnp.asarray(coded), layout)


def test_layout_mismatch_is_reported():
    layout = LAYOUTS["dinov2"][0]
    with pytest.raises(ValueError, match=r"\(\.\.\., heads, 261, 261\)"):
        cls_map(jnp.ones((1, 2, 197, 197)), layout)
    with pytest.raises(ValueError, match="261 tokens"):
        tokens_to_grid(jnp.ones((4, 197)), layout)


# ---- maps vs slices of the attention tensor ----------------------------------------------

@pytest.fixture(scope="module", params=["dinov2", "mae", "siglip2"])
def outputs(request):
    model = tiny(request.param)
    pixels = images(2, model.spec)
    full = ssl_jax.forward(model, pixels, attentions="full")
    rows = ssl_jax.forward(model, pixels, attentions="cls")
    return request.param, full, rows


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
def test_maps_are_reductions_of_the_tensor(outputs, fusion):
    _, full, rows = outputs
    layout = full.layout
    att = np.asarray(full.attentions)  # (B, L, H, T, T)
    b, n_layers, heads = att.shape[:3]
    p, g = layout.num_prefix, (layout.grid_h, layout.grid_w)
    reduce = {"mean": np.mean, "max": np.max, "min": np.min}[fusion]
    heads_sel = [3, 1]

    fused = reduce(att[:, :, heads_sel], axis=2)  # (B, L, T, T)
    want_mean = fused.mean(axis=-2)[..., p:].reshape(b, n_layers, *g)
    got_mean = mean_map(full.attentions, layout, fusion=fusion, head_indices=heads_sel)
    np.testing.assert_allclose(got_mean, want_mean, rtol=1e-6, atol=1e-8)

    per_head = mean_map(full.attentions, layout, fusion=None)
    assert per_head.shape == (b, n_layers, heads, *g)
    if fusion == "mean":  # per-head maps stack to the fused numbers
        np.testing.assert_allclose(per_head.mean(axis=2), mean_map(full.attentions, layout),
                                   rtol=1e-6, atol=1e-8)

    if layout.has_cls:
        want_cls = fused[..., 0, p:].reshape(b, n_layers, *g)
        got = cls_map(full.attentions, layout, fusion=fusion, head_indices=heads_sel)
        np.testing.assert_allclose(got, want_cls, rtol=1e-6, atol=1e-8)
        # the cheap "cls" forward gives the same maps as the full tensor
        got_rows = cls_row_map(rows.cls_attentions, layout, fusion=fusion, head_indices=heads_sel)
        np.testing.assert_allclose(got_rows, want_cls, rtol=1e-5, atol=1e-7)
        per_head_cls = cls_map(full.attentions, layout, fusion=None)
        assert per_head_cls.shape == (b, n_layers, heads, *g)
        np.testing.assert_array_equal(per_head_cls[:, :, 2],
                                      att[:, :, 2, 0, p:].reshape(b, n_layers, *g))
        stacked = reduce(np.asarray(per_head_cls)[:, :, heads_sel], axis=2)
        np.testing.assert_allclose(stacked, got, rtol=1e-6, atol=1e-8)
    else:
        probe = np.asarray(full.probe_attention)  # (B, H, T)
        got = probe_map(full.probe_attention, layout, fusion=fusion, head_indices=heads_sel)
        want = reduce(probe[:, heads_sel], axis=1).reshape(b, *g)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)
        per_head_probe = probe_map(rows.probe_attention, layout, fusion=None)
        assert per_head_probe.shape == (b, heads, *g)
        np.testing.assert_allclose(reduce(np.asarray(per_head_probe)[:, heads_sel], axis=1),
                                   got, rtol=1e-5, atol=1e-7)


def test_attention_map_dispatch(outputs):
    alias, full, rows = outputs
    layout = full.layout
    if not layout.has_cls:
        with pytest.raises(ValueError, match="needs a CLS token"):
            attention_map(full, "cls")
        np.testing.assert_allclose(attention_map(rows, "probe"),
                                   probe_map(full.probe_attention, layout), rtol=1e-5, atol=1e-8)
        return
    last = attention_map(full, "cls", layer=-1)
    np.testing.assert_array_equal(last, cls_map(full.attentions[:, -1], layout))
    np.testing.assert_allclose(attention_map(rows, "cls", layer=2), last, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(attention_map(full, "mean", layer=1, fusion=None),
                                  mean_map(full.attentions[:, 1], layout, fusion=None))
    with pytest.raises(ValueError, match=r"layer 7 is not in this output's attention layers"):
        attention_map(full, "cls", layer=7)
    with pytest.raises(ValueError, match="mean maps need"):
        attention_map(rows, "mean")
    model = tiny(alias)
    subset = ssl_jax.forward(model, images(1, model.spec), attentions="cls", layers=[1])
    assert attention_map(subset, "cls", layer=1).shape == (1, layout.grid_h, layout.grid_w)


def test_maps_jit():
    layout, t = LAYOUTS["dinov2"]
    att = jnp.asarray(random_attention(np.random.default_rng(2), (2, 3, 4, t, t)))
    jitted = jax.jit(cls_map, static_argnames=("layout", "fusion", "head_indices"))
    np.testing.assert_array_equal(jitted(att, layout, fusion="max", head_indices=(0, 2)),
                                  cls_map(att, layout, fusion="max", head_indices=(0, 2)))
    jitted_mean = jax.jit(mean_map, static_argnames=("layout", "fusion", "head_indices"))
    np.testing.assert_allclose(jitted_mean(att, layout), mean_map(att, layout), rtol=1e-6)
