"""`ssl-jax extract`: the map cache is resumable after a real SIGKILL, multi-device extraction
equals single-device, and bad input gives one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssl_jax.io.store import CacheError, MapCache, open_existing

torch = pytest.importorskip("torch")
from tests.support import hf_reference as ref

MODELS = ("dinov2", "siglip2")  # registers + CLS, and no CLS with a MAP probe


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A 12-image dataset folder, two 2-layer checkpoints and a study config using them."""
    root = tmp_path_factory.mktemp("study")
    images = root / "data" / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(12):
        h, w = 90 + 7 * i, 140 - 3 * i
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
            images / f"Q{100 + i}_wd0.jpg")
    weights = {}
    for alias in MODELS:
        folder = root / f"ckpt_{alias}"
        ref.build(alias, seed=1, num_layers=2).save_pretrained(folder)
        weights[alias] = str(folder)
    cfg = root / "study.toml"
    lines = ["[study]", 'name = "test"', f'dataset = "{root / "data"}"',
             f"models = {list(MODELS)!r}".replace("'", '"'),
             'methods = ["cls", "cls_heads", "mean", "rollout", "probe"]',
             "input_size = 112", "batch_size = 4", "", "[study.weights]"]
    lines += [f'{a} = "{p}"' for a, p in weights.items()]
    cfg.write_text("\n".join(lines) + "\n")
    return root, cfg


def _extract_cmd(cfg: Path, cache: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ssl_jax.cli", "extract", "--config", str(cfg), "--cache",
            str(cache), "--no-progress", *extra]


def _env(devices: int = 1) -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _all_maps(cache_dir: Path) -> dict[tuple[str, str], np.ndarray]:
    cache = open_existing(cache_dir)
    return {(m, meth): cache.read(m, meth) for m in MODELS for meth in cache.methods(m)}


@pytest.fixture(scope="module")
def reference_run(study):
    root, cfg = study
    cache = root / "cache_ref"
    r = subprocess.run(_extract_cmd(cfg, cache), env=_env(1), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    return cache


@pytest.mark.slow
@pytest.mark.subprocess
def test_cache_contents(reference_run):
    cache = open_existing(reference_run)
    assert cache.num_images == 12
    assert cache.methods("dinov2") == ["cls", "cls_heads", "mean", "rollout"]
    assert cache.methods("siglip2") == ["mean", "probe"]  # no CLS: no cls / rollout
    assert cache.read("dinov2", "cls").shape == (12, 2, 8, 8)  # 112 / 14
    assert cache.read("dinov2", "cls_heads").shape == (12, 2, 12, 8, 8)
    assert cache.read("siglip2", "probe").shape == (12, 1, 7, 7)  # 112 / 16
    assert all(cache.done_mask(m).all() for m in MODELS)
    # probe maps are probabilities over the 49 patches
    np.testing.assert_allclose(cache.read("siglip2", "probe").sum((-2, -1)), 1.0, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.subprocess
def test_rerun_skips_everything(study, reference_run):
    _, cfg = study
    before = _all_maps(reference_run)
    r = subprocess.run(_extract_cmd(cfg, reference_run), env=_env(1), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "0 images computed, 12 already cached" in r.stdout
    after = _all_maps(reference_run)
    assert before.keys() == after.keys()
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])
    # what the rerun did, not how long it took: every model took the skip path (its log line
    # has no timing suffix) and none was loaded or compiled (no first-batch timing recorded)
    lines = r.stdout.splitlines()
    for alias in MODELS:
        assert f"{alias}: 0 images computed, 12 already cached" in lines, r.stdout
    timings = json.loads((reference_run / "extract_manifest.json").read_text())["timings_s"]
    assert not any(k.endswith(("_first_batch_incl_compile", "_steady")) for k in timings), timings


@pytest.mark.slow
@pytest.mark.subprocess
def test_sigkill_then_resume_equals_uninterrupted(study, reference_run):
    root, cfg = study
    cache = root / "cache_killed"
    proc = subprocess.Popen(_extract_cmd(cfg, cache, "--batch-size", "1"), env=_env(1),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done_dir = cache / "dinov2" / "done"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        # chunk files are named by index once renamed into place (temporaries are not)
        if done_dir.is_dir() and any(p.name.isdigit() for p in done_dir.iterdir()):
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "extract finished before it could be killed"
    partial = MapCache(cache, open_existing(cache).image_ids, open_existing(cache).settings)
    n_done = sum(int(partial.done_mask(m).sum()) for m in MODELS)
    assert 0 < n_done < 12 * len(MODELS)

    r = subprocess.run(_extract_cmd(cfg, cache, "--batch-size", "1"), env=_env(1),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "already cached" in r.stdout
    resumed, reference = _all_maps(cache), _all_maps(reference_run)
    assert resumed.keys() == reference.keys()
    for k in reference:  # batch 1 vs batch 4: same numbers up to float32 rounding of gemms
        np.testing.assert_allclose(resumed[k], reference[k], rtol=0, atol=2e-6, err_msg=str(k))


@pytest.mark.slow
def test_resume_is_bit_identical_with_same_batching(study, tmp_path):
    """Batches are fixed index groups padded to full size, so a resumed run computes every
    image with exactly the same shapes as an uninterrupted one."""
    from ssl_jax.workflows.study.config import load_config
    from ssl_jax.workflows.study.dataset import study_images
    from ssl_jax.workflows.study.run_extract import run_extract

    _, cfg_path = study
    cfg = load_config(cfg_path).replace(models=("dinov2",))
    ids, paths = study_images(cfg.dataset)
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    run_extract(cfg, whole, ids, paths, progress=False, log=lambda s: None)
    run_extract(cfg, parts, ids, paths, progress=False, stop_after_batches=1,
                log=lambda s: None)
    assert int(open_existing(parts).done_mask("dinov2").sum()) == 4
    run_extract(cfg, parts, ids, paths, progress=False, log=lambda s: None)
    a, b = open_existing(whole), open_existing(parts)
    for method in a.methods("dinov2"):
        np.testing.assert_array_equal(a.read("dinov2", method), b.read("dinov2", method))


@pytest.mark.slow
@pytest.mark.subprocess
def test_four_host_devices_equal_one(study, reference_run):
    root, cfg = study
    cache = root / "cache_4dev"
    r = subprocess.run(_extract_cmd(cfg, cache), env=_env(4), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((cache / "extract_manifest.json").read_text())
    assert len(manifest["devices"]) == 4, manifest["devices"]
    multi, single = _all_maps(cache), _all_maps(reference_run)
    for k in single:
        np.testing.assert_allclose(multi[k], single[k], rtol=0, atol=2e-6, err_msg=str(k))


def test_cache_refuses_other_settings(tmp_path):
    MapCache(tmp_path, ["a", "b"], {"input_size": 224})
    with pytest.raises(CacheError, match=r"different study \(settings \['input_size'\]"):
        MapCache(tmp_path, ["a", "b"], {"input_size": 112})
    with pytest.raises(CacheError, match="image list"):
        MapCache(tmp_path, ["a", "c"], {"input_size": 224})


@pytest.mark.parametrize("args, message", [
    (["--models", "resnet"], "unknown model(s) ['resnet']"),
    (["--methods", "gradcam9"], "unknown method(s) ['gradcam9']"),
    (["--dataset", "/nonexistent/wc"], "dataset folder /nonexistent/wc does not exist"),
    (["--config", "/nonexistent/x.toml"], "study config /nonexistent/x.toml does not exist"),
])
@pytest.mark.subprocess
def test_bad_input_is_one_line(args, message, tmp_path):
    r = subprocess.run([sys.executable, "-m", "ssl_jax.cli", "extract", "--cache",
                        str(tmp_path / "c"), *args], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert message in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.subprocess
def test_unwritable_cache_folder(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    r = subprocess.run([sys.executable, "-m", "ssl_jax.cli", "extract", "--cache",
                        str(blocker / "cache")], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "is not writable" in r.stderr and "Traceback" not in r.stderr
