"""Linear probe: sklearn pipeline and CV as the original; features = CLS / pooled; CLI."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

import ssl_jax
from ssl_jax.train import extract_features, linear_probe
from tests.support.tiny import tiny


def _clusters(n_per=12, d=8, seed=0):
    rng = np.random.default_rng(seed)
    centres = 3.0 * rng.normal(size=(4, d))
    x = np.concatenate([c + rng.normal(size=(n_per, d)) for c in centres])
    y = np.repeat(np.arange(4), n_per)
    return x, y


def test_probe_matches_sklearn_cross_validation():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = _clusters()
    y_with_unlabelled = np.concatenate([y, [-1, -1]])
    x_with_unlabelled = np.concatenate([x, np.zeros((2, x.shape[1]))])
    res = linear_probe(x_with_unlabelled, y_with_unlabelled, class_names=list("ABCD"))
    ref = cross_val_score(
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=42)), x, y,
        cv=StratifiedKFold(5, shuffle=True, random_state=42))
    np.testing.assert_allclose(res.cv_fold_accuracies, ref)
    assert res.cv_std == pytest.approx(float(np.std(ref)))
    assert res.num_samples == 48 and res.num_features == 8
    assert np.asarray(res.cv_confusion_matrix).sum() == 48
    assert np.asarray(res.train_confusion_matrix).shape == (4, 4)
    assert res.cv_accuracy > 0.9 and 0.9 < res.cv_macro_f1 <= 1.0
    assert set(res.per_class_train_accuracy) == set("ABCD")
    json.dumps(res.to_json())


def test_probe_needs_enough_images_per_class():
    x, y = _clusters(n_per=4)
    with pytest.raises(ValueError, match="needs >= 5 images per class"):
        linear_probe(x, y)


@pytest.mark.parametrize("alias", ["dinov2", "siglip2"])
def test_features_are_cls_or_pooled(alias):
    m = tiny(alias, num_layers=2)
    s = 28 if alias == "dinov2" else 32
    images = np.random.default_rng(0).integers(0, 256, (3, s, s, 3), dtype=np.uint8)
    feats = extract_features(m, images, batch_size=2)
    p = m.spec.preprocessing
    pixels = (images.astype(np.float32) * np.float32(1 / 255) - np.asarray(p.mean, np.float32)) \
        / np.asarray(p.std, np.float32)
    out = ssl_jax.forward(m, pixels)
    want = out.pooled if alias == "siglip2" else out.last_hidden_state[:, 0]
    np.testing.assert_allclose(feats, np.asarray(want), rtol=0, atol=2e-5)
    assert jax.numpy.asarray(feats).shape == (3, 64)


@pytest.mark.slow
def test_probe_cli_on_the_sample_dataset(tmp_path):
    pytest.importorskip("torch")
    from click.testing import CliRunner

    from ssl_jax.cli import main
    from tests.support.finetune import save_tiny

    folder = save_tiny("dinov2", tmp_path / "dinov2")
    out = tmp_path / "probe.json"
    r = CliRunner().invoke(main, ["probe", "--model", str(folder), "--dataset", "sample",
                                  "--input-size", "28", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "cv accuracy" in r.output and "confusion matrix" in r.output
    res = json.loads(out.read_text())
    assert res["num_samples"] > 20 and len(res["cv_confusion_matrix"]) == 4
