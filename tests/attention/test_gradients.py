"""Gradient attributions against torch autograd on the same small random transformers model.

Each reference model is a real architecture (transformers, eager attention) shrunk to width
64 / 4 heads / 3 layers and a 4×4 position table, re-randomised as in hf_reference, saved and
loaded through ssl_jax's converter. The torch side is written here from the definitions:
retain_grad on the returned hidden states and attention probabilities (the tensors the
forward actually uses), one backward per model for all three methods.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import ssl_jax
from ssl_jax.attention import (
    attention_gradient,
    grad_cam,
    gradient_saliency,
    relevance_from,
    smoothgrad,
    target_score,
)
from tests.support import hf_reference as ref
from tests.support.tiny import images, tiny

TOL = 1e-4  # max abs difference, relative to the reference map's max |value|
NUM_CLASSES = 5

# alias → the target each one is tested with (the argmax choice: test_target_score)
CASES = {"dinov2": "class", "siglip2": "norm"}


def tiny_hf(alias: str, seed: int = 0):
    config = ref.vision_config(alias)
    patch = config.patch_size
    config.hidden_size, config.num_attention_heads, config.num_hidden_layers = 64, 4, 3
    if alias == "dinov2":
        config.mlp_ratio = 2
    else:
        config.intermediate_size = 128
    config.image_size = 4 * patch
    config._attn_implementation = "eager"
    cls = {"dinov2": "Dinov2WithRegistersModel", "siglip2": "SiglipVisionModel"}[alias]
    import transformers

    model = getattr(transformers, cls)(config).eval()
    ref.randomize_(model, seed)
    return model


def torch_attributions(hf, alias, pixels, spec, layout, state, head, class_index):
    """Grad-CAM at hidden state `state`, Chefer relevance and pixel saliency, in torch."""
    x = torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))).requires_grad_(True)
    kw = dict(output_attentions=True, output_hidden_states=True)
    if alias != "dinov2":
        kw["interpolate_pos_encoding"] = True
    out = hf(pixel_values=x, **kw)
    attns, hs = list(out.attentions), out.hidden_states[state]
    for a in attns:
        a.retain_grad()
    hs.retain_grad()
    pooled = out.pooler_output
    if head is None:
        target = pooled.norm(dim=-1).sum()
    else:
        logits = pooled @ torch.from_numpy(head["kernel"]) + torch.from_numpy(head["bias"])
        idx = logits.argmax(-1) if class_index is None else torch.as_tensor(class_index)
        target = logits.gather(1, idx[:, None]).sum()
    target.backward()
    b, p, g = pixels.shape[0], layout.num_prefix, (layout.grid_h, layout.grid_w)
    with torch.no_grad():
        acts, grads = hs[:, p:], hs.grad[:, p:]
        weights = grads.mean(dim=1, keepdim=True)
        cam = torch.relu((acts * weights).sum(-1)).reshape(b, *g)
        t = attns[0].shape[-1]
        rel = torch.eye(t).expand(b, t, t).clone()
        for a in attns:
            layer_cam = (a.grad * a).clamp(min=0).mean(dim=1)
            rel = rel + layer_cam @ rel
        row = rel[:, 0] if layout.has_cls else rel.mean(dim=1)
        chefer = row[:, p:].reshape(b, *g)
        saliency = x.grad.abs().amax(dim=1)
        stacked = (torch.stack(attns, 1).numpy(), torch.stack([a.grad for a in attns], 1).numpy())
    return cam.numpy(), chefer.numpy(), saliency.numpy(), stacked


def rel_err(ours, theirs) -> float:
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape, f"shape {ours.shape} vs {theirs.shape}"
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


@pytest.mark.slow
@pytest.mark.parity
@pytest.mark.parametrize("alias", list(CASES))
def test_gradient_methods_match_torch_autograd(alias, tmp_path):
    torch.manual_seed(0)
    hf = tiny_hf(alias)
    hf.save_pretrained(tmp_path)
    model = ssl_jax.load_model(tmp_path)
    spec = model.spec
    assert (spec.hidden_size, spec.num_heads, spec.num_layers) == (64, 4, 3)
    pixels = images(2, spec, cells=4)  # a 4×5 grid: non-square, position table interpolated
    layout = spec.layout(*pixels.shape[1:3])

    rng = np.random.default_rng(5)
    head = class_index = None
    if CASES[alias] != "norm":
        head = {"kernel": rng.normal(size=(64, NUM_CLASSES)).astype(np.float32),
                "bias": rng.normal(size=NUM_CLASSES).astype(np.float32)}
    if CASES[alias] == "class":
        class_index = np.array([1, 3])

    state = spec.num_layers - 1  # grad_cam's default layer -2: the last layer's input
    cam_t, chefer_t, sal_t, (att_t, grad_t) = torch_attributions(
        hf, alias, pixels, spec, layout, state, head, class_index)

    cam = grad_cam(model, pixels, head=head, class_index=class_index)
    chefer = attention_gradient(model, pixels, head=head, class_index=class_index)
    sal = gradient_saliency(model, pixels, head=head, class_index=class_index)
    errs = {"grad_cam": rel_err(cam, cam_t), "attention_gradient": rel_err(chefer, chefer_t),
            "saliency": rel_err(sal, sal_t)}
    print(f"\n{alias} relative max abs diffs vs torch: "
          + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()))
    for name, err in errs.items():
        assert err <= TOL, f"{alias} {name}: {err:.2e} of max|torch| exceeds {TOL:.0e}"
    # the maps are not trivial: some patches positive, not all equal
    assert float(np.ptp(cam_t)) > 0 and float(np.ptp(chefer_t)) > 0
    # relevance_from on torch's own attentions and gradients reproduces torch's relevance
    r = np.asarray(relevance_from(att_t, grad_t))
    row = r[:, 0] if layout.has_cls else r.mean(axis=1)
    np.testing.assert_allclose(row[:, layout.num_prefix:].reshape(chefer_t.shape), chefer_t,
                               rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_gradient_properties():
    model = tiny("dinov2")
    spec = model.spec
    pixels = images(2, spec, cells=3)
    # a CLS-pooled target sees the last layer's patch outputs not at all: zero Grad-CAM
    np.testing.assert_array_equal(grad_cam(model, pixels, layer=-1), 0.0)
    cam = grad_cam(model, pixels, layer=1, relu=False)
    assert cam.shape == (2, 3, 4) and float(np.abs(cam).max()) > 0
    # jit-able from the outside (a pure function of model and pixels); a custom target equal
    # to the default gives the same map
    norm = lambda out: target_score(spec, out)  # noqa: E731
    jitted = jax.jit(lambda m, x: grad_cam(m, x, layer=1, relu=False, target=norm))
    np.testing.assert_allclose(jitted(model, pixels), cam, rtol=1e-5, atol=1e-8)

    # SmoothGrad: no noise → the vanilla saliency; a key decides the noise
    sal = gradient_saliency(model, pixels)
    np.testing.assert_allclose(smoothgrad(model, pixels, jax.random.key(0), num_samples=2,
                                          noise_level=0.0), sal, rtol=1e-6, atol=1e-9)
    a = smoothgrad(model, pixels, jax.random.key(1), num_samples=2)
    b = smoothgrad(model, pixels, jax.random.key(1), num_samples=2)
    c = smoothgrad(model, pixels, jax.random.key(2), num_samples=2)
    np.testing.assert_array_equal(a, b)
    assert a.shape == pixels.shape[:3] and not np.allclose(a, c)


def test_target_score():
    spec = tiny("clip").spec
    rng = np.random.default_rng(0)
    emb = rng.normal(size=64).astype(np.float32)
    head = {"kernel": rng.normal(size=(64, 7)).astype(np.float32),
            "bias": rng.normal(size=7).astype(np.float32)}
    logits = emb @ head["kernel"] + head["bias"]
    out = {"pooled": emb, "last_hidden_state": np.zeros((5, 64), np.float32)}
    np.testing.assert_allclose(target_score(spec, out), np.linalg.norm(emb), rtol=1e-6)
    np.testing.assert_allclose(target_score(spec, out, head), logits.max(), rtol=1e-5)
    np.testing.assert_allclose(target_score(spec, out, head, 2), logits[2], rtol=1e-5)
    # no pooler (MAE): the CLS token; no CLS and no pooler: the token mean
    tokens = rng.normal(size=(5, 64)).astype(np.float32)
    mae = tiny("mae").spec
    np.testing.assert_allclose(target_score(mae, {"last_hidden_state": tokens}),
                               np.linalg.norm(tokens[0]), rtol=1e-6)
    flat = spec.replace(has_cls=False, pooler="none")
    np.testing.assert_allclose(target_score(flat, {"last_hidden_state": tokens}),
                               np.linalg.norm(tokens.mean(0)), rtol=1e-5)


def test_gradient_errors():
    model = tiny("mae")
    pixels = images(1, model.spec, cells=2)
    head = {"kernel": np.zeros((64, 3), np.float32)}
    with pytest.raises(ValueError, match="class_index needs a head"):
        grad_cam(model, pixels, class_index=1)
    with pytest.raises(ValueError, match=r"head kernel must be \(64, num_classes\)"):
        grad_cam(model, pixels, head={"kernel": np.zeros((32, 3), np.float32)})
    with pytest.raises(ValueError, match="out of range for a head with 3 classes"):
        attention_gradient(model, pixels, head=head, class_index=3)
    with pytest.raises(ValueError, match=r"one per image \(1,\)"):
        gradient_saliency(model, pixels, head=head, class_index=[0, 1])
    with pytest.raises(ValueError, match="layer 3 out of range for a 3-layer model"):
        grad_cam(model, pixels, layer=3)
    with pytest.raises(ValueError, match="not both"):
        grad_cam(model, pixels, head=head, target=lambda out: out["pooled"].sum())
    with pytest.raises(ValueError, match="channels last"):
        grad_cam(model, pixels.transpose(0, 3, 1, 2))
