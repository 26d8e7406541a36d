"""`ssl-jax finetune` on the embedded sample dataset, killed with SIGKILL mid-run and resumed,
ends with exactly the parameters and optimizer state of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

pytest.importorskip("torch")

from ssl_jax.io.runs import RunCheckpoints, read_run
from ssl_jax.models import load_model
from ssl_jax.train.lora import LoraConfig
from ssl_jax.train.step import initial_state_like
from tests.support.finetune import save_tiny


def _cmd(model, out, *extra):
    return [sys.executable, "-m", "ssl_jax.cli", "finetune", "--model", str(model),
            "--dataset", "sample", "--out", str(out), "--strategy", "lora", "--epochs", "2",
            "--batch-size", "8", "--input-size", "28", "--lr-backbone", "1e-3",
            "--lora-rank", "4", "--save-every", "1", *extra]


def _env(cache, devices: int = 1):
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(cache),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def _final_state(run_dir, model):
    rec = read_run(run_dir)
    lora = LoraConfig(**{**rec["training"]["lora"], "targets": tuple(
        rec["training"]["lora"]["targets"])})
    target = initial_state_like(model.spec, model.params, rec["training"], 4, lora)
    ck = RunCheckpoints(run_dir, create=False)
    try:
        step, state, meta = ck.restore("latest", target)
    finally:
        ck.close()
    return step, state, meta


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 6-step LoRA run (2 epochs of the 23 sample training images)."""
    root = tmp_path_factory.mktemp("finetune")
    model_dir = save_tiny("dinov2", root / "dinov2")
    cache = root / "xla_cache"
    ref = subprocess.run(_cmd(model_dir, root / "ref"), env=_env(cache),
                         capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-3000:]
    assert "done: 6 steps" in ref.stdout and "over 1 device(s)" in ref.stdout
    return model_dir, cache, root / "ref"


@pytest.mark.slow
@pytest.mark.subprocess
def test_sigkill_then_resume_is_bit_identical(reference, tmp_path):
    model_dir, cache, ref_dir = reference

    out = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(model_dir, out), env=_env(cache), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    latest = out / "checkpoints" / "latest"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        steps = [int(p.name) for p in latest.iterdir() if p.name.isdigit()] \
            if latest.is_dir() else []
        if steps and max(steps) >= 2:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "finetune finished before it could be killed"
    steps = sorted(int(p.name) for p in latest.iterdir() if p.name.isdigit())
    assert steps and 2 <= steps[-1] < 6, steps

    resumed = subprocess.run(_cmd(model_dir, out), env=_env(cache), capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed" in resumed.stdout and "done: 6 steps" in resumed.stdout

    model = load_model(model_dir)
    s_ref, ref_state, ref_meta = _final_state(ref_dir, model)
    s_res, res_state, res_meta = _final_state(out, model)
    assert s_ref == s_res == 6
    flat_ref = jax.tree_util.tree_flatten_with_path(ref_state)[0]
    flat_res = jax.tree_util.tree_flatten_with_path(res_state)[0]
    assert len(flat_ref) == len(flat_res)
    for (path, a), (_, b) in zip(flat_ref, flat_res, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b),
                                      err_msg=jax.tree_util.keystr(path))
    assert ref_meta["history"] == res_meta["history"]
    assert ref_meta["losses"] == res_meta["losses"]
    assert (out / "split.json").is_file() and (out / "manifest.json").is_file()


@pytest.mark.slow
@pytest.mark.subprocess
def test_four_devices_data_parallel_equals_one(reference, tmp_path):
    model_dir, cache, ref_dir = reference
    r = subprocess.run(_cmd(model_dir, tmp_path / "dp4", "--max-steps", "3"),
                       env=_env(cache, devices=4), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "over 4 device(s)" in r.stdout and "stopped at step 3" in r.stdout
    model = load_model(model_dir)
    _, _, meta4 = _final_state(tmp_path / "dp4", model)
    _, _, meta1 = _final_state(ref_dir, model)
    # the batch is split over 4 devices: the same numbers up to float32 summation order
    np.testing.assert_allclose(meta4["losses"], meta1["losses"][:3], rtol=0, atol=1e-5)


@pytest.mark.subprocess
def test_cli_errors_are_one_line(tmp_path):
    bad = tmp_path / "run"
    bad.mkdir()
    (bad / "finetune_run.json").write_text("{broken")
    r = subprocess.run([sys.executable, "-m", "ssl_jax.cli", "probe", "--model", str(bad)],
                       capture_output=True, text=True, timeout=120, env=_env(tmp_path / "c"))
    assert r.returncode != 0
    assert "corrupt run record" in r.stderr and "Traceback" not in r.stderr
