"""`ssl-jax models` and `ssl-jax inspect`."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from ssl_jax.cli import main

torch = pytest.importorskip("torch")


def test_models_lists_the_five():
    result = CliRunner().invoke(main, ["models"])
    assert result.exit_code == 0, result.output
    for line in ("dinov2   facebook/dinov2-with-registers-base", "261", "CLS + 4 reg + 256 patches",
                 "google/siglip2-base-patch16-224", "196 patches"):
        assert line in result.output


def test_inspect_a_folder(tmp_path):
    import transformers as tf

    cfg = tf.Dinov2WithRegistersConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                       image_size=56, patch_size=14)
    tf.Dinov2WithRegistersModel(cfg).save_pretrained(tmp_path)
    result = CliRunner().invoke(main, ["inspect", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "family        dinov2" in result.output
    assert "32 x 2 layers, 2 heads" in result.output
    assert "CLS yes, 4 registers, 256 patches" in result.output  # at the 224 processor input
    n_params = sum(p.numel() for p in tf.Dinov2WithRegistersModel(cfg).parameters())
    assert f"parameters    {n_params:,}" in result.output


def test_inspect_errors_are_one_line(tmp_path):
    result = CliRunner().invoke(main, ["inspect", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {tmp_path}: no config.json in this folder"
    result = CliRunner().invoke(main, ["inspect", "nonsense"])
    assert result.exit_code == 2 and "unknown model 'nonsense'" in result.output
