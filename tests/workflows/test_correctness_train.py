"""Issue 12, item 5: training never ends in a silent wrong result.

- a step whose loss, gradient norm or updated parameters are not finite stops the run with a
  one-line error naming the step and what became non-finite; exit status non-zero; the last
  good checkpoint stays on disk byte for byte and loads;
- every numeric option of finetune / probe / shift is checked before any work or file (NaN,
  inf, negative, zero where meaningless), one line naming the option and the value;
- `--max-steps N` stops once the run's global step reaches N; a rerun with the same N says the
  run is already there (exit 0) instead of "stopped at step N" again, and the printed advice
  (a larger --max-steps, or none) progresses;
- `--export` on a run stopped by --max-steps says that nothing is exported yet.

Runs the CLI in-process (click's CliRunner) on a tiny 2-layer DINOv2-reg, linear strategy,
28 px, the embedded sample dataset (23 training images: 3 steps per epoch, 6 in 2 epochs).
"""

from __future__ import annotations

import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("torch")

from click.testing import CliRunner

import ssl_jax
from ssl_jax.cli import main
from ssl_jax.core.errors import UserError
from ssl_jax.io.runs import RunCheckpoints, read_run
from ssl_jax.train import FinetuneConfig
from ssl_jax.train.step import initial_state_like
from ssl_jax.workflows.finetune import finetune
from tests.support.finetune import save_tiny, synthetic_data


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny("dinov2", tmp_path_factory.mktemp("tiny") / "dinov2")


def _finetune(model_dir, out, *extra):
    args = ["finetune", "--model", str(model_dir), "--dataset", "sample", "--out", str(out),
            "--strategy", "linear", "--epochs", "2", "--batch-size", "8", "--input-size", "28",
            "--no-augment", *extra]
    return CliRunner().invoke(main, args)


def _error_line(r) -> str:
    assert r.exit_code != 0, r.output
    assert "Traceback" not in r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def _tree_bytes(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _latest(run_dir, model):
    rec = read_run(run_dir)
    target = initial_state_like(model.spec, model.params, rec["training"], 4, None)
    ck = RunCheckpoints(run_dir, create=False)
    try:
        return ck.latest.all_steps(), ck.restore("latest", target)
    finally:
        ck.close()


# ---- non-finite training ----------------------------------------------------------------------

def test_divergence_stops_at_the_step_and_keeps_the_last_good_checkpoint(model_dir, tmp_path):
    out = tmp_path / "run"
    hot = ("--lr-head", "1e30", "--warmup-ratio", "0", "--save-every", "1")
    first = _finetune(model_dir, out, *hot, "--max-steps", "1")
    assert first.exit_code == 0, first.output
    assert "stopped at step 1 of 6" in first.output
    before = _tree_bytes(out / "checkpoints")

    r = _finetune(model_dir, out, *hot)  # step 1 overshoots to ~1e30, step 2 to inf
    line = _error_line(r)
    assert "diverged at step 2 of 6" in line and "params became non-finite" in line, line
    assert "last good checkpoint (step 1)" in line
    assert "best val accuracy" not in r.output and not (out / "manifest.json").exists()
    assert _tree_bytes(out / "checkpoints") == before  # untouched, byte for byte
    steps, (step, state, _) = _latest(out, ssl_jax.load_model(model_dir))
    assert list(steps) == [1] and step == 1
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state))


def test_nonfinite_loss_from_nan_weights_names_step_1(model_dir, tmp_path):
    model = ssl_jax.load_model(model_dir)
    params = dict(model.params, embed={**model.params["embed"],
                                       "cls": model.params["embed"]["cls"].at[0].set(jnp.nan)})
    bad = model.replace(params=params)
    cfg = FinetuneConfig(strategy="linear", epochs=2, batch_size=8, augment=False)
    with pytest.raises(UserError, match=r"diverged at step 1 of 6: loss") as e:
        finetune(bad, synthetic_data(), cfg, tmp_path / "run", log=lambda _: None)
    assert "no checkpoint had been saved yet" in str(e.value)
    ck = RunCheckpoints(tmp_path / "run", create=False)
    try:
        assert ck.latest.latest_step() is None
    finally:
        ck.close()


# ---- options checked up front ----------------------------------------------------------------

FINETUNE_BAD = [
    ("--lr-head", "nan"), ("--lr-backbone", "nan"), ("--lr-backbone", "inf"),
    ("--lr-head", "0"), ("--lr-head", "1e39"), ("--weight-decay", "-0.1"),
    ("--warmup-ratio", "1.5"), ("--epochs", "0"), ("--batch-size", "-2"),
    ("--max-steps", "-3"), ("--max-steps", "0"), ("--max-grad-norm", "nan"),
    ("--max-grad-norm", "-1"), ("--lora-rank", "0"), ("--lora-alpha", "nan"),
    ("--lora-dropout", "1"), ("--seed", "-1"), ("--val-fraction", "0"),
    ("--val-fraction", "nan"), ("--input-size", "0"), ("--save-every", "-1"),
]


@pytest.mark.parametrize(("option", "value"), FINETUNE_BAD)
def test_finetune_refuses_bad_numbers_before_any_work(model_dir, tmp_path, option, value):
    out = tmp_path / "run"
    line = _error_line(_finetune(model_dir, out, option, value))
    assert option in line and (value in line or repr(float(value)) in line), line
    assert not out.exists()


def test_library_config_and_max_steps_checked(model_dir, tmp_path):
    with pytest.raises(UserError, match="lr_head must be a finite number > 0, got nan"):
        FinetuneConfig(lr_head=float("nan"))
    with pytest.raises(UserError, match="lr_backbone"):
        FinetuneConfig(lr_backbone=float("inf"))
    model = ssl_jax.load_model(model_dir)
    with pytest.raises(UserError, match=r"stop_after_steps must be an integer >= 1, got -3"):
        finetune(model, synthetic_data(), FinetuneConfig(strategy="linear"), tmp_path / "r",
                 stop_after_steps=-3)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("command", "option", "value"), [
    ("probe", "--folds", "1"), ("probe", "--batch-size", "0"), ("probe", "--seed", "-5"),
    ("probe", "--input-size", "-28"),
    ("shift", "--percentiles", "90,abc"), ("shift", "--percentiles", "nan"),
    ("shift", "--percentiles", "150"), ("shift", "--resamples", "0"), ("shift", "--size", "0"),
])
def test_probe_and_shift_refuse_bad_numbers(model_dir, tmp_path, command, option, value):
    out = tmp_path / "out"
    args = (["probe", "--model", str(model_dir), "--out", str(out / "p.json")]
            if command == "probe" else ["shift", "--run", str(tmp_path), "--out", str(out)])
    line = _error_line(CliRunner().invoke(main, [*args, option, value]))
    assert option in line and value.split(",")[-1] in line, line
    assert not out.exists()


# ---- --max-steps and --export ---------------------------------------------------------------

@pytest.fixture(scope="module")
def stepped(model_dir, tmp_path_factory):
    """One run driven by --max-steps 2, the same again, --max-steps 4, then to the end."""
    root = tmp_path_factory.mktemp("steps")
    out, export = root / "run", root / "export"
    model = ssl_jax.load_model(model_dir)
    res = {}
    for name, extra in (("a", ("--max-steps", "2")), ("b", ("--max-steps", "2")),
                        ("c", ("--max-steps", "4")), ("d", ())):
        r = _finetune(model_dir, out, "--export", str(export), *extra)
        assert r.exit_code == 0, r.output
        res[name] = (r.output, list(_latest(out, model)[0]), export.exists())
    return out, export, res


def test_max_steps_rerun_says_already_done(stepped):
    _, _, res = stepped
    out_a, steps_a, _ = res["a"]
    out_b, steps_b, _ = res["b"]
    assert "stopped at step 2 of 6" in out_a and steps_a == [2]
    # the same command again: no "stopped at step 2" a second time, and no new step
    assert "stopped at step" not in out_b, out_b
    assert "already at step 2 of 6" in out_b and "nothing to do" in out_b
    assert steps_b == [2]


def test_max_steps_advice_progresses(stepped):
    _, _, res = stepped
    assert "--max-steps greater than 2 (the run has 6 steps) or without --max-steps" in res["a"][0]
    out_c, steps_c, _ = res["c"]  # following the advice: 2 -> 4
    assert "at step 2/6" in out_c and "stopped at step 4 of 6" in out_c and steps_c == [4]
    out_d, steps_d, _ = res["d"]
    assert "done: 6 steps" in out_d and steps_d == [6]


def test_export_is_never_skipped_silently(stepped):
    _, export, res = stepped
    for name in ("a", "b", "c"):
        text, _, exported = res[name]
        assert "--export: nothing exported to" in text and "when the run finishes (step 6)" \
            in text, text
        assert not exported
    text, _, exported = res["d"]
    assert f"exported the best checkpoint to {export}" in text and exported
    assert (export / "config.json").is_file()


def test_shift_layer_out_of_range_is_refused(stepped, tmp_path):
    run_dir = stepped[0]
    for layer in ("2", "-3"):
        out = tmp_path / f"shift{layer}"
        r = CliRunner().invoke(main, ["shift", "--run", str(run_dir), "--out", str(out),
                                      "--layer", layer, "--no-emd", "--no-figures"])
        line = _error_line(r)
        assert f"layer {layer} is out of range" in line and "2 layers" in line, line
        assert not out.exists()


def test_resuming_a_diverged_checkpoint_is_refused(model_dir, tmp_path):
    """A checkpoint holding NaN (written by an older version that trained on through a
    divergence) is refused at resume instead of training on."""
    out = tmp_path / "run"
    assert _finetune(model_dir, out, "--max-steps", "1", "--save-every", "1").exit_code == 0
    model = ssl_jax.load_model(model_dir)
    _, (_, state, meta) = _latest(out, model)
    state = jax.tree.map(lambda x: x * jnp.nan if jnp.issubdtype(x.dtype, jnp.floating) else x,
                         state)
    state["step"] = jnp.asarray(2, jnp.int32)
    ck = RunCheckpoints(out)
    try:
        ck.save_latest(2, state, {**meta, "kind": "latest"})
    finally:
        ck.close()
    line = _error_line(_finetune(model_dir, out, "--save-every", "1"))
    assert "latest checkpoint (step 2) holds non-finite values" in line, line
