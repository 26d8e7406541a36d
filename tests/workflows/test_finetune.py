"""Fine-tuning on a tiny real-architecture DINOv2-reg: loss goes down; `linear` and `lora`
leave the base weights alone; merged-LoRA export reproduces the adapter forward; resume is
bit-identical; bad checkpoints give clear errors."""

from __future__ import annotations

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("torch")

import ssl_jax
from ssl_jax.io.runs import RunCheckpoints, export_hf, load_classifier, load_finetuned, read_run
from ssl_jax.models import CheckpointError
from ssl_jax.train import FinetuneConfig, LoraConfig, batch_logits
from ssl_jax.train.step import initial_state_like
from ssl_jax.workflows.finetune import finetune
from tests.support.finetune import save_tiny, synthetic_data

pytestmark = [pytest.mark.slow]

LORA = LoraConfig(rank=4, alpha=8.0, dropout=0.1)


def config(strategy: str, **kw) -> FinetuneConfig:
    base = dict(strategy=strategy, epochs=2, batch_size=8, lr_backbone=2e-3, lr_head=2e-2,
                warmup_ratio=0.0, lora=LORA, save_every=2)
    return FinetuneConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = save_tiny("dinov2", tmp_path_factory.mktemp("tiny") / "dinov2")
    return ssl_jax.load_model(folder)


@pytest.fixture(scope="module")
def data():
    return synthetic_data()


@pytest.fixture(scope="module")
def runs(model, data, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    # augmentation only in the LoRA run (each distinct step compiles once; CPU time is shared)
    return {s: finetune(model, data, config(s, augment=s == "lora"), root / s,
                        log=lambda _: None) for s in ("full", "linear", "lora")}


def _latest(run_dir, model, strategy):
    rec = read_run(run_dir)
    lora = LORA if strategy == "lora" else None
    target = initial_state_like(model.spec, model.params, rec["training"], 4, lora)
    ck = RunCheckpoints(run_dir, create=False)
    try:
        return ck.restore("latest", target)[1]
    finally:
        ck.close()


def _equal_trees(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb, strict=True))


@pytest.mark.parametrize("strategy", ["full", "linear", "lora"])
def test_loss_decreases(runs, strategy):
    r = runs[strategy]
    assert r.finished and r.steps == 6 and len(r.history) == 2
    first, last = r.history[0]["train_loss"], r.history[-1]["train_loss"]
    assert last < first, r.history
    assert r.best_step in (3, 6)


def test_linear_leaves_backbone_unchanged(runs, model):
    ft = load_finetuned(runs["linear"].run_dir)
    assert _equal_trees(ft.params, model.params)
    clf = load_classifier(runs["linear"].run_dir, which="latest")
    assert set(runs["linear"].state["trainable"]) == {"head"}
    assert not np.array_equal(clf.head["kernel"], load_classifier(
        runs["full"].run_dir).head["kernel"])


def test_lora_changes_only_adapters_and_head(runs, model):
    state = runs["lora"].state
    assert set(state["trainable"]) == {"lora", "head"}
    assert set(state["trainable"]["lora"]) == {"q", "v"}
    for ab in state["trainable"]["lora"].values():
        assert float(jnp.abs(ab["b"]).max()) > 0  # B started at 0 and was trained
    merged = load_finetuned(runs["lora"].run_dir, which="latest")
    flat_m = dict(jax.tree_util.tree_flatten_with_path(merged.params)[0])
    flat_b = dict(jax.tree_util.tree_flatten_with_path(model.params)[0])
    changed = {jax.tree_util.keystr(k) for k in flat_b if not np.array_equal(flat_m[k], flat_b[k])}
    assert changed == {"['blocks']['attn']['qkv']['kernel']"}
    # only the q and v slots of the fused kernel moved
    k_m = np.asarray(merged.params["blocks"]["attn"]["qkv"]["kernel"])
    k_b = np.asarray(model.params["blocks"]["attn"]["qkv"]["kernel"])
    np.testing.assert_array_equal(k_m[:, :, 1], k_b[:, :, 1])
    assert not np.array_equal(k_m[:, :, 0], k_b[:, :, 0])
    # the full strategy moves every backbone leaf kind
    full = load_finetuned(runs["full"].run_dir, which="latest")
    assert not np.array_equal(full.params["blocks"]["mlp"]["fc1"]["kernel"],
                              model.params["blocks"]["mlp"]["fc1"]["kernel"])


def test_merged_lora_export_matches_adapter_forward(runs, model, data, tmp_path):
    from safetensors.numpy import load_file

    run = runs["lora"]
    export = export_hf(run.run_dir, tmp_path / "export", which="latest")
    exported = ssl_jax.load_model(export)
    head = load_file(str(export / "classifier_head.safetensors"))
    head = {"kernel": jnp.asarray(head["weight"].T), "bias": jnp.asarray(head["bias"])}
    p = model.spec.preprocessing
    pixels = (data.val_images.astype(np.float32) / 255 - np.asarray(p.mean, np.float32)) \
        / np.asarray(p.std, np.float32)
    tr = run.state["trainable"]
    adapter = batch_logits(model.spec, model.params, tr["head"], pixels, adapters=tr["lora"],
                           lora=LORA)
    merged = batch_logits(exported.spec, exported.params, head, pixels)
    np.testing.assert_allclose(np.asarray(merged), np.asarray(adapter), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(head["kernel"], tr["head"]["kernel"])


def test_resume_is_bit_identical(runs, model, data, tmp_path):
    run_dir = tmp_path / "resumed"
    part = finetune(model, data, config("lora"), run_dir, stop_after_steps=4, log=lambda _: None)
    assert not part.finished and part.steps == 4
    done = finetune(model, data, config("lora"), run_dir, log=lambda _: None)
    assert done.finished and done.history == runs["lora"].history
    assert _equal_trees(_latest(run_dir, model, "lora"), _latest(runs["lora"].run_dir, model,
                                                                  "lora"))


def test_mismatched_run_is_refused(runs, model, data):
    with pytest.raises(CheckpointError, match=r"(?s)holds a different run.*lr_head: stored 0.02, now 0.5"):
        finetune(model, data, config("lora", lr_head=0.5), runs["lora"].run_dir)


def test_corrupted_checkpoints_give_clear_errors(runs, model, tmp_path):
    run_dir = tmp_path / "corrupt"
    shutil.copytree(runs["full"].run_dir, run_dir)
    # 1. flip bytes in every array data file of the latest checkpoint
    latest = run_dir / "checkpoints" / "latest"
    files = [f for f in latest.rglob("*") if f.is_file() and "ocdbt.process" in str(f)
             and f.parent.name == "d"]
    assert files
    for f in files:
        raw = bytearray(f.read_bytes())
        for i in range(0, len(raw), 97):
            raw[i] ^= 0xFF
        f.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"checkpoints/latest/6.*(corrupt|sha256)"):
        load_classifier(run_dir, which="latest")
    # 2. the run record
    (run_dir / "finetune_run.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt run record"):
        load_finetuned(run_dir)
    # 3. a checkpoint of another strategy under a run record that claims "lora"
    other = tmp_path / "mismatch"
    shutil.copytree(runs["full"].run_dir, other)
    shutil.copy(runs["lora"].run_dir / "finetune_run.json", other / "finetune_run.json")
    with pytest.raises(CheckpointError, match=r"checkpoints/best/\d+: cannot restore"):
        load_finetuned(other)
    # 4. no such run
    with pytest.raises(CheckpointError, match="not a fine-tuning run"):
        load_finetuned(tmp_path)


def test_shift_frozen_vs_finetuned(runs, tmp_path):
    from click.testing import CliRunner

    from ssl_jax.cli import main

    out = tmp_path / "shift"
    r = CliRunner().invoke(main, ["shift", "--run", str(runs["linear"].run_dir), "--run",
                                  str(runs["full"].run_dir), "--dataset", "sample", "--out",
                                  str(out), "--size", "56", "--resamples", "500"])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "shift.json").read_text())
    metrics = {"iou@90", "iou@50", "coverage", "pointing", "mse", "kl", "emd"}
    assert {row["metric"] for row in res["rows"]} == metrics
    assert len(res["rows"]) == 2 * len(metrics)
    for row in res["rows"]:
        assert row["holm_family"].endswith("2 model x strategy rows")
        assert row["n"] == 21 and row["ci_lo"] <= row["delta"] <= row["ci_hi"]
        if row["run"].endswith("linear"):  # frozen backbone: the maps cannot move
            assert row["delta"] == 0.0 and row["frozen_mean"] == row["finetuned_mean"]
    full = [row for row in res["rows"] if row["run"].endswith("full")]
    assert any(row["delta"] != 0.0 for row in full)
    assert set(res["breakdowns"]["dinov2 full"]) == {"metric", "style", "feature"}
    assert len(list((out / "figures").glob("*.png"))) == 6


def test_load_model_opens_run_folders(runs):
    """`ssl_jax.load_model(run_dir)` dispatches to `load_finetuned` (best checkpoint)."""
    loaded = ssl_jax.load_model(runs["lora"].run_dir)
    assert loaded.source.endswith("#best")
    assert _equal_trees(loaded.params, load_finetuned(runs["lora"].run_dir).params)
