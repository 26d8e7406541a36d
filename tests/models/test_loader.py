"""Checkpoint loading: sources (folder, HF cache), key maps and every error message."""

from __future__ import annotations

import json
import shutil

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

torch = pytest.importorskip("torch")
import transformers as tf

import ssl_jax
from ssl_jax.models import CheckpointError

TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            image_size=32, patch_size=16)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A 2-layer CLIP vision tower saved by transformers (weights only, float32)."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_clip")
    tf.CLIPVisionModel(tf.CLIPVisionConfig(**TINY)).eval().save_pretrained(folder)
    return folder


def _copy(src, tmp_path, name="ckpt"):
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parity
def test_loads_and_matches_transformers(tiny_clip, rng):
    model = ssl_jax.load_model(tiny_clip)
    assert model.spec.family == "clip" and model.spec.num_layers == 2
    hf = tf.CLIPVisionModel.from_pretrained(tiny_clip, attn_implementation="eager").eval()
    x = rng.normal(size=(2, 32, 32, 3)).astype(np.float32)
    with torch.no_grad():
        theirs = hf(pixel_values=torch.from_numpy(x.transpose(0, 3, 1, 2))).pooler_output.numpy()
    ours = np.asarray(ssl_jax.forward(model, x).pooled)
    assert np.abs(ours - theirs).max() < 1e-5


def test_unknown_alias():
    with pytest.raises(CheckpointError, match="unknown model 'dinov9': not an alias"):
        ssl_jax.load_model("dinov9")


def test_folder_without_weights(tiny_clip, tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    shutil.copy(tiny_clip / "config.json", folder)
    with pytest.raises(CheckpointError, match=r"no weights \(\*\.safetensors\) found.*config\.json"):
        ssl_jax.load_model(folder)


def test_folder_without_config(tmp_path):
    with pytest.raises(CheckpointError, match=r"no config\.json in this folder"):
        ssl_jax.load_model(tmp_path)


def _rewrite(folder, fn):
    path = folder / "model.safetensors"
    tensors = fn(dict(load_file(path)))
    save_file(tensors, path)


def test_missing_key_is_named(tiny_clip, tmp_path):
    folder = _copy(tiny_clip, tmp_path)
    _rewrite(folder, lambda t: {k: v for k, v in t.items() if "layers.1.mlp.fc1.weight" not in k})
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): encoder\.layers\.1\.mlp\.fc1\.weight"):
        ssl_jax.load_model(folder)


def test_wrong_shape_is_named(tiny_clip, tmp_path):
    folder = _copy(tiny_clip, tmp_path)

    def shrink(t):
        key = next(k for k in t if k.endswith("layers.0.self_attn.q_proj.weight"))
        t[key] = t[key][:16]
        return t

    _rewrite(folder, shrink)
    with pytest.raises(CheckpointError,
                       match=r"q_proj\.weight: expected \(32, 32\), got \(16, 32\)"):
        ssl_jax.load_model(folder)


def test_all_problems_reported_together(tiny_clip, tmp_path):
    folder = _copy(tiny_clip, tmp_path)

    def break_three_ways(t):
        t = {k: v for k, v in t.items() if not k.endswith("post_layernorm.bias")}
        t["embeddings.mystery"] = np.zeros(3, np.float32)
        key = next(k for k in t if k.endswith("layers.1.mlp.fc2.bias"))
        t[key] = np.zeros(7, np.float32)
        return t

    _rewrite(folder, break_three_ways)
    with pytest.raises(CheckpointError) as info:
        ssl_jax.load_model(folder)
    msg = str(info.value)
    assert "missing keys (1): post_layernorm.bias" in msg
    assert "unexpected keys (1): embeddings.mystery" in msg
    assert "shape mismatches (1): encoder.layers.1.mlp.fc2.bias: expected (32,), got (7,)" in msg


@pytest.mark.parametrize("damage", ["truncate", "garbage_header", "empty"])
def test_corrupt_safetensors(tiny_clip, tmp_path, damage):
    folder = _copy(tiny_clip, tmp_path)
    path = folder / "model.safetensors"
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage_header":
        path.write_bytes(data[:8] + b"{not json" + data[17:])
    else:
        path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*(corrupt|cannot read)"):
        ssl_jax.load_model(folder)


def test_pickle_needs_opt_in(tiny_clip, tmp_path):
    folder = tmp_path / "bin"
    folder.mkdir()
    shutil.copy(tiny_clip / "config.json", folder)
    torch.save({k: torch.from_numpy(v.copy()) for k, v in load_file(tiny_clip / "model.safetensors").items()},
               folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"only pickled weights \(pytorch_model\.bin\).*allow_pickle=True"):
        ssl_jax.load_model(folder)
    from_bin = ssl_jax.load_model(folder, allow_pickle=True)
    from_st = ssl_jax.load_model(tiny_clip)
    for a, b in zip(jax.tree.leaves(from_bin.params), jax.tree.leaves(from_st.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_unsupported_model_type(tiny_clip, tmp_path):
    folder = _copy(tiny_clip, tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_type"] = "siglip2_vision_model"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"unsupported model_type .siglip2_vision_model.*NaFlex"):
        ssl_jax.load_model(folder)


def _hf_cache(root, repo_id, files_from):
    """Lay out `repo_id` the way huggingface_hub's cache stores a downloaded snapshot."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    for f in files_from.iterdir():
        shutil.copy(f, snap / f.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snap


def test_hub_id_resolves_through_the_cache_offline(tiny_clip, tmp_path):
    _hf_cache(tmp_path, "someorg/tiny-clip", tiny_clip)
    model = ssl_jax.load_model("someorg/tiny-clip", cache_dir=tmp_path, local_files_only=True)
    assert model.spec.family == "clip" and "snapshots" in model.source
    with pytest.raises(CheckpointError, match="someorg/absent: not in the Hugging Face cache"):
        ssl_jax.load_model("someorg/absent", cache_dir=tmp_path, local_files_only=True)


def test_sharded_checkpoint(tiny_clip, tmp_path):
    folder = _copy(tiny_clip, tmp_path)
    tensors = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    keys = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    for name, ks in shards.items():
        save_file({k: tensors[k] for k in ks}, folder / name)
    index = {"weight_map": {k: name for name, ks in shards.items() for k in ks}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    a = ssl_jax.load_model(folder).params
    b = ssl_jax.load_model(tiny_clip).params
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


TINY_CONFIGS = {
    "dinov2": lambda: tf.Dinov2WithRegistersModel(tf.Dinov2WithRegistersConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=56, patch_size=14)),
    "dinov3": lambda: tf.DINOv3ViTModel(tf.DINOv3ViTConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_register_tokens=2)),
    "mae": lambda: tf.ViTMAEModel(tf.ViTMAEConfig(**TINY, mask_ratio=0.0)),
    "siglip": lambda: tf.SiglipVisionModel(tf.SiglipVisionConfig(**TINY)),
}


@pytest.mark.parametrize("family", TINY_CONFIGS)
def test_transformers5_module_names_load_like_hub_names(family, tmp_path):
    """save_pretrained writes the hub's legacy names; a raw state_dict() carries the v5
    module names (q_proj, layers.N, model.layer.N). Both must give the same params."""
    torch.manual_seed(1)
    hf = TINY_CONFIGS[family]().eval()
    hub = tmp_path / "hub"
    hf.save_pretrained(hub)
    v5 = _copy(hub, tmp_path, "v5")
    (v5 / "model.safetensors").unlink()
    save_file({k: v.detach().numpy().copy() for k, v in hf.state_dict().items()},
              v5 / "model.safetensors")
    hub_keys = set(load_file(hub / "model.safetensors"))
    v5_keys = set(load_file(v5 / "model.safetensors"))
    if family != "siglip":  # these families were renamed in transformers 5
        assert hub_keys != v5_keys
    a, b = ssl_jax.load_model(hub).params, ssl_jax.load_model(v5).params
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
