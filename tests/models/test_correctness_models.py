"""Issue 12, model cases: a bias the architecture lacks is no parameter at all (random init,
loading, fine-tuning, LoRA merge and Hugging Face export agree with transformers), and
`forward` refuses pixels that were not preprocessed.

Bars as in test_parity: attention probabilities within 5e-6 absolute; last_hidden_state
within 5e-6 of the reference's max |value|.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import transformers as tf

import ssl_jax
from ssl_jax.core.errors import UserError
from ssl_jax.io.runs import (
    export_hf,
    load_finetuned,
    params_to_state_dict,
)
from ssl_jax.models.config import bundled_spec
from ssl_jax.models.families import MODELS
from ssl_jax.train import FinetuneConfig, LoraConfig
from ssl_jax.workflows.finetune import finetune
from tests.support import hf_reference as ref
from tests.support.finetune import synthetic_data, tiny_hf_model

ATTN_TOL = 5e-6
REL_TOL = 5e-6

_HF_CLASS = {"dinov2": tf.Dinov2WithRegistersModel, "dinov3": tf.DINOv3ViTModel,
             "mae": tf.ViTMAEModel, "clip": tf.CLIPVisionModel, "siglip2": tf.SiglipVisionModel}


def _has_absent_bias(spec) -> bool:
    return not all(spec.qkv_bias) or not spec.proj_bias or not spec.mlp_bias


# every study model whose architecture lacks some bias (today: DINOv3's key bias)
ABSENT_BIAS = tuple(a for a in MODELS if _has_absent_bias(bundled_spec(a)))


def test_absent_bias_families_are_found():
    assert "dinov3" in ABSENT_BIAS  # the parametrisation below can never go empty unnoticed


def _leaf_paths(params) -> set[str]:
    return {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]}


def _hf_outputs(hf, pixels: np.ndarray, alias: str) -> dict:
    x = torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)))
    kw: dict = {"interpolate_pos_encoding": True} if alias in ("mae", "clip", "siglip2") else {}
    if alias == "mae":  # identity "shuffle" (mask_ratio is 0): tokens stay in order
        n = (x.shape[2] // 16) * (x.shape[3] // 16)
        kw["noise"] = torch.arange(n, dtype=torch.float32).expand(x.shape[0], -1)
    with torch.no_grad():
        out = hf(pixel_values=x, output_attentions=True, **kw)
    return {"attentions": torch.stack(out.attentions, 1).numpy(),
            "last_hidden_state": out.last_hidden_state.numpy()}


def _assert_parity(what: str, ours, theirs: dict):
    att = np.asarray(ours.attentions)
    assert att.shape == theirs["attentions"].shape
    err = np.abs(att - theirs["attentions"]).max()
    assert err <= ATTN_TOL, f"{what}: attentions max abs error {err:.2e}"
    last, ref_last = np.asarray(ours.last_hidden_state), theirs["last_hidden_state"]
    err = np.abs(last - ref_last).max() / np.abs(ref_last).max()
    assert err <= REL_TOL, f"{what}: last_hidden_state max error {err:.2e} of max|ref|"


def _tiny(alias: str, seed: int = 0, **flags):
    """tiny_hf_model's architecture (width 64, 2 layers) with `flags` set on its config,
    rebuilt so that derived config fields (DINOv3's backbone stage names) follow the sizes."""
    base = tiny_hf_model(alias, seed).config
    cfg = base.to_dict()
    for k in ("stage_names", "out_features", "out_indices"):
        cfg.pop(k, None)
    config = type(base)(**{**cfg, **flags})
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    hf = _HF_CLASS[alias](config).eval()
    ref.randomize_(hf, seed)
    return hf


def _pixels(spec, n: int = 2, size: int = 2, seed: int = 0) -> np.ndarray:
    hw = size * spec.patch_size
    return np.random.default_rng(seed).normal(0, 1, (n, hw, hw, 3)).astype(np.float32)


def _as_transformers(alias: str, spec, params, folder):
    """Our params saved as a Hugging Face folder (our export key map), loaded by transformers."""
    from safetensors.numpy import save_file

    ref.vision_config(alias).save_pretrained(folder)
    prefix = "vision_model." if alias in ("clip", "siglip2") else ""
    sd = {prefix + k: np.ascontiguousarray(v) for k, v in params_to_state_dict(spec, params).items()}
    save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
    hf, info = _HF_CLASS[alias].from_pretrained(folder, output_loading_info=True,
                                                attn_implementation="eager")
    return hf.eval(), info


# ---- case 1a: random init and the export key map --------------------------------------------

@pytest.mark.slow
@pytest.mark.parity
@pytest.mark.parametrize("alias", ABSENT_BIAS)
def test_random_model_has_no_absent_bias_and_matches_transformers(alias, tmp_path):
    """Base: random_model("dinov3") carried a (3, heads, head_dim) qkv bias whose k slot was
    random (|b| up to 0.081); its export wrote k_proj.bias, which transformers dropped as
    unexpected, and the two forwards differed by ~4e-3 in attention."""
    model = ssl_jax.random_model(alias)
    spec = model.spec
    # written as a Hugging Face folder, transformers loads exactly its own parameters:
    # nothing dropped as unexpected, nothing missing
    hf, info = _as_transformers(alias, spec, model.params, tmp_path)
    hf.eval()
    pixels = _pixels(spec)
    ours = ssl_jax.forward(model, pixels, attentions="full")
    _assert_parity(f"random_model({alias!r})", ours, _hf_outputs(hf, pixels, alias))
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        assert not info.get(kind), f"{kind}: {info.get(kind)}"
    attn = model.params["blocks"]["attn"]
    slots = tuple(i for i, b in enumerate(spec.qkv_bias) if b)
    if slots:
        assert attn["qkv"]["bias"].shape[1:] == (len(slots), spec.num_heads, spec.head_dim)
    else:
        assert "bias" not in attn["qkv"]
    assert ("bias" in attn["out"]) == spec.proj_bias
    assert ("bias" in model.params["blocks"]["mlp"]["fc1"]) == spec.mlp_bias


# tiny transformers configs with biases switched off, loaded through our converter
_VARIANTS = {
    "dinov3-no-q-k-proj-mlp-bias": ("dinov3", dict(query_bias=False, proj_bias=False,
                                                   mlp_bias=False)),
    "dinov3-k-only": ("dinov3", dict(query_bias=False, key_bias=True, value_bias=False)),
    "dinov2-no-qkv-bias": ("dinov2", dict(qkv_bias=False)),
    "mae-no-qkv-bias": ("mae", dict(qkv_bias=False)),
}


@pytest.mark.parametrize("variant", list(_VARIANTS))
def test_loader_follows_every_bias_flag(variant, tmp_path):
    from safetensors.numpy import load_file

    alias, flags = _VARIANTS[variant]
    hf = _tiny(alias, **flags)
    hf.save_pretrained(tmp_path)
    model = ssl_jax.load_model(tmp_path)
    saved = load_file(str(tmp_path / "model.safetensors"))
    ours_sd = params_to_state_dict(model.spec, model.params)
    assert set(ours_sd) == set(saved)  # no bias added, none lost
    for k, v in ours_sd.items():  # the round trip is exact
        np.testing.assert_array_equal(v, saved[k], err_msg=k)
    pixels = _pixels(model.spec)
    _assert_parity(variant, ssl_jax.forward(model, pixels, attentions="full"),
                   _hf_outputs(hf, pixels, alias))


def test_checkpoint_with_a_bias_the_config_lacks_is_refused(tmp_path):
    """A DINOv3 checkpoint that carries k_proj.bias (as our base-commit exports did) does not
    describe its config's model: refused, naming the key, rather than silently dropped."""
    from safetensors.numpy import load_file, save_file

    hf = _tiny("dinov3")
    hf.save_pretrained(tmp_path)
    sd = load_file(str(tmp_path / "model.safetensors"))
    sd["layer.0.attention.k_proj.bias"] = np.zeros(64, np.float32)
    save_file(sd, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ssl_jax.CheckpointError, match=r"unexpected keys.*k_proj\.bias"):
        ssl_jax.load_model(tmp_path)


# ---- case 1b: fine-tune, export, reload in transformers ---------------------------------------

_STRATEGIES = {
    "full": dict(strategy="full"),
    # LoRA on k too: the adapter on a projection whose bias is absent still works and merges
    "lora-qkv": dict(strategy="lora", lora=LoraConfig(rank=4, alpha=8.0, dropout=0.0,
                                                      targets=("q", "k", "v"))),
}


@pytest.mark.slow
@pytest.mark.parity
@pytest.mark.parametrize("strategy", list(_STRATEGIES))
@pytest.mark.parametrize("alias", ABSENT_BIAS)
def test_finetuned_export_is_the_same_model_in_transformers(alias, strategy, tmp_path):
    """Base (dinov3, 3 full steps): the trained k bias was exported as k_proj.bias, dropped by
    transformers as UNEXPECTED; attention differed by ~4e-3, last hidden state by ~1e-2."""
    hf0 = _tiny(alias)
    hf0.save_pretrained(tmp_path / "base")
    model = ssl_jax.load_model(tmp_path / "base")
    size = 2 * model.spec.patch_size
    data = synthetic_data(size=size, n_train=24, n_val=8)
    cfg = FinetuneConfig(epochs=1, batch_size=8, lr_backbone=2e-2, lr_head=2e-2, warmup_ratio=0.0,
                         augment=False, **_STRATEGIES[strategy])
    run = finetune(model, data, cfg, tmp_path / "run", log=lambda _: None)
    assert run.finished and run.steps == 3
    trained = load_finetuned(run.run_dir, which="latest")
    assert _leaf_paths(trained.params) == _leaf_paths(model.params)  # no bias appeared
    moved = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                         trained.params["blocks"]["attn"]["qkv"], model.params["blocks"]["attn"]["qkv"])
    assert moved["kernel"]
    export = export_hf(run.run_dir, tmp_path / "export", which="latest")
    hf, info = _HF_CLASS[alias].from_pretrained(export, output_loading_info=True,
                                                attn_implementation="eager")
    hf.eval()
    pixels = _pixels(model.spec, size=2, seed=1)
    _assert_parity(f"{alias} {strategy} export", ssl_jax.forward(trained, pixels, attentions="full"),
                   _hf_outputs(hf, pixels, alias))
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        assert not info.get(kind), f"{kind}: {info.get(kind)}"
    # and our own loader reads the export back as the same model
    back = ssl_jax.load_model(export)
    for a, b in zip(jax.tree.leaves(back.params), jax.tree.leaves(trained.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_fused_qkv_bias_matches_a_zero_padded_dense():
    """The QKV projection with an absent k slot equals a dense layer with a zero k bias."""
    from ssl_jax.models.layers import QKV

    spec = dataclasses.replace(bundled_spec("dinov3"), hidden_size=32, num_heads=2)
    key = jax.random.key(0)
    x = jax.random.normal(key, (5, 32))
    kernel = jax.random.normal(jax.random.fold_in(key, 1), (32, 3, 2, 16))
    bias = jax.random.normal(jax.random.fold_in(key, 2), (2, 2, 16))
    out = QKV(spec).apply({"params": {"kernel": kernel, "bias": bias}}, x)
    full = jnp.stack([bias[0], jnp.zeros((2, 16)), bias[1]])
    want = jnp.einsum("td,dshe->tshe", x, kernel, precision="highest") + full
    np.testing.assert_allclose(np.asarray(out), np.asarray(want), rtol=0, atol=1e-5)


# ---- case 7a: forward refuses pixels that were not preprocessed --------------------------------

@pytest.fixture(scope="module")
def tiny_model():
    spec = bundled_spec("dinov3").replace(hidden_size=64, num_heads=4, num_layers=2, mlp_dim=128)
    return ssl_jax.random_model(spec)


def _raw_images(n: int = 2, size: int = 32) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (n, size, size, 3)).astype(np.uint8)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["uint8", "int32", "float 0..255", "jax float 0..255",
                                  "normalised without 1/255", "nan"])
def test_forward_refuses_unpreprocessed_pixels(tiny_model, kind):
    """Base: raw uint8 pixels went through forward unnormalised without a word (attention
    0.12 off the preprocessed input's)."""
    raw = _raw_images()
    p = tiny_model.spec.preprocessing
    pixels = {
        "uint8": raw,
        "int32": raw.astype(np.int32),
        "float 0..255": raw.astype(np.float32),
        "jax float 0..255": jnp.asarray(raw, jnp.float32),
        "normalised without 1/255": (raw - np.float32(p.mean[0])) / np.float32(p.std[0]),
        "nan": np.where(raw == raw.max(), np.nan, 0.0).astype(np.float32),
    }[kind]
    with pytest.raises(UserError, match=r"ssl_jax\.preprocess") as e:
        ssl_jax.forward(tiny_model, pixels, attentions="cls")
    assert "check_inputs=False" in str(e.value)


@pytest.mark.slow
def test_preprocessed_pixels_pass_and_check_can_be_skipped(tiny_model):
    raw = _raw_images()
    pixels, _ = ssl_jax.preprocess(tiny_model, list(raw), size=(32, 32))
    ours = ssl_jax.forward(tiny_model, pixels, attentions="cls")
    # the harm the check prevents: raw values give a different attention
    unchecked = ssl_jax.forward(tiny_model, raw, attentions="cls", check_inputs=False)
    assert np.abs(np.asarray(unchecked.cls_attentions) - np.asarray(ours.cls_attentions)).max() > 1e-2
    # the extreme preprocessed values of every study model's processor pass
    for alias in MODELS:
        spec = bundled_spec(alias)
        extreme = np.zeros((1, 32, 32, 3), np.uint8)
        extreme[:, :16] = 255
        x, _ = ssl_jax.preprocess(spec, list(extreme), size=(32, 32))
        ssl_jax.models.check_pixel_values(spec, x)
        ssl_jax.models.check_pixel_values(spec, jnp.asarray(x))


@pytest.mark.slow
def test_input_check_is_skipped_for_tracers(tiny_model):
    pixels, _ = ssl_jax.preprocess(tiny_model, list(_raw_images()), size=(32, 32))

    def loss(x):
        return ssl_jax.forward(tiny_model, x).pooled.sum()

    g = jax.jit(jax.grad(loss))(jnp.asarray(pixels))
    assert g.shape == pixels.shape and bool(jnp.all(jnp.isfinite(g)))
    out = jax.vmap(lambda x: ssl_jax.forward(tiny_model, x[None]).pooled[0])(jnp.asarray(pixels))
    assert out.shape == (2, 64)


@pytest.mark.slow
def test_every_public_entry_point_refuses_raw_pixels(tiny_model):
    from ssl_jax.attention.gradients import gradient_saliency

    raw = _raw_images(1)
    with pytest.raises(UserError, match=r"ssl_jax\.preprocess"):
        gradient_saliency(tiny_model, raw)
    with pytest.raises(UserError, match=r"ssl_jax\.preprocess"):
        ssl_jax.models.encode(tiny_model.spec, tiny_model.params, raw[0])
    with pytest.raises(UserError, match=r"ssl_jax\.preprocess"):
        ssl_jax.models.encode(tiny_model.spec, tiny_model.params, raw[0].astype(np.float32))
    out = ssl_jax.models.encode(tiny_model.spec, tiny_model.params, raw[0], check_inputs=False)
    assert out["last_hidden_state"].shape == (tiny_model.layout(32, 32).num_tokens, 64)
