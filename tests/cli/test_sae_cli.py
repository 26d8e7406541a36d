"""`ssl-jax sae train|features|score|correlate` and `ssl-jax visualize` end to end on the
sample dataset with a small DINOv2-with-registers checkpoint folder (random weights, made
here with transformers): every command exits 0, writes what it says, and its numbers are
consistent with the library functions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from ssl_jax.cli import main

pytest.importorskip("torch")

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    import transformers as tf

    root = tmp_path_factory.mktemp("sae_cli")
    model_dir = root / "model"
    cfg = tf.Dinov2WithRegistersConfig(hidden_size=32, num_hidden_layers=2,
                                       num_attention_heads=2, intermediate_size=64,
                                       image_size=56, patch_size=14)
    tf.Dinov2WithRegistersModel(cfg).eval().save_pretrained(model_dir)
    out = root / "out"
    args = ["sae", "train", "--model", str(model_dir), "--size", "56", "--steps", "60",
            "--expansion", "4", "--batch-size", "128", "--target-l0", "8", "--lr", "3e-3",
            "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return model_dir, out, result.output


def invoke(*args):
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_train_writes_store_sae_and_summary(run):
    from ssl_jax.io.sae_files import load_sae
    from ssl_jax.sae import evaluate
    from ssl_jax.workflows.sae import load_activations

    _, out, output = run
    assert "capturing layer activations: 49/49 images" in output
    acts, sae = load_activations(out / "activations"), load_sae(out / "sae")
    assert acts.num_images == 49 and acts.grid == (4, 4) and acts.width == 32
    assert sae.num_features == 4 * 32 and sae.meta["layer"] == 2
    summary = json.loads((out / "train.json").read_text())
    m = evaluate(sae, acts.tokens("all"))
    assert summary["after"]["mse"] == pytest.approx(m.mse, rel=1e-5)
    assert summary["after"]["mse"] < summary["before"]["mse"]
    assert (out / "train_state" / "latest").is_dir()
    # a second run finds everything done: no recapture, training resumes at the end
    again = invoke("sae", "train", "--model", str(run[0]), "--size", "56", "--steps", "60",
                   "--expansion", "4", "--batch-size", "128", "--target-l0", "8", "--lr", "3e-3",
                   "--out", str(out))
    assert "resuming SAE training at step 60" in again


def test_features_score_correlate(run):
    model_dir, out, _ = run
    text = invoke("sae", "features", "--out", str(out), "--top", "4", "--examples", "3")
    rows = json.loads((out / "features.json").read_text())
    assert len(rows) == 4 and all(len(r["top_images"]) == 3 for r in rows)
    means = [r["mean"] for r in rows]
    assert means == sorted(means, reverse=True) and "feature" in text
    png = np.asarray(Image.open(out / "features.png").convert("L"), np.float32)
    assert png.std() > 5

    invoke("sae", "score", "--out", str(out), "--features", "16", "--size", "56")
    s = json.loads((out / "spatial.json").read_text())
    iou = np.asarray(s["iou"])
    assert iou.shape == (16, len(s["types"])) and len(s["features"]) == 16
    valid = iou[iou >= 0]
    assert valid.size and valid.max() <= 1.0
    assert s["best_iou"][0]["score"] == pytest.approx(valid.max())
    assert (out / "spatial.png").exists()

    text = invoke("sae", "correlate", "--out", str(out), "--embed-model", str(model_dir),
                  "--top-n", "3")
    c = json.loads((out / "correlate.json").read_text())
    assert c["method"] == "pearson" and c["alpha"] == 0.05 and len(c["classes"]) >= 2
    assert set(c["tiers"]) and "significant pairs" in text
    assert all(t["q"] >= 0 for t in c["top_correlations"])


def test_visualize_sae_feature_and_channel(run, tmp_path):
    model_dir, out, _ = run
    text = invoke("visualize", "--model", str(model_dir), "--kind", "sae", "--index", "0",
                  "--sae", str(out / "sae"), "--size", "56", "--steps", "30",
                  "--out", str(tmp_path / "v.png"))
    start, final = (float(v) for v in text.split(": ")[1].split(" (")[0].split(" -> "))
    assert final > start
    img = np.asarray(Image.open(tmp_path / "v.png"), np.float32)
    assert img.shape == (56, 56, 3) and img.std() > 1
    text = invoke("visualize", "--model", str(model_dir), "--kind", "channel", "--index", "3",
                  "--size", "56", "--steps", "30", "--negative", "--out", str(tmp_path / "n.png"))
    start, final = (float(v) for v in text.split(": ")[1].split(" (")[0].split(" -> "))
    assert final < start


def test_errors_name_the_missing_folder(tmp_path):
    result = CliRunner().invoke(main, ["sae", "features", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "run `ssl-jax sae train" in result.output
