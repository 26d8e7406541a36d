"""The fine-tuning run: the resumable, bit-reproducible loop around `ssl_jax.train.step`
(checkpoints and run folder through `ssl_jax.io.runs`, progress, the divergence stop)."""


from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from ssl_jax.core.batching import padded_batches
from ssl_jax.core.errors import UserError
from ssl_jax.core.validate import RULES, OptionError, check
from ssl_jax.io.manifest import machine, versions
from ssl_jax.io.runs import (
    RUN_FILE,
    RUN_FORMAT,
    RunCheckpoints,
    compare_records,
    hf_files_for,
    read_run,
    save_base,
    spec_to_json,
    tree_digest,
    write_json,
)
from ssl_jax.models.convert import CheckpointError
from ssl_jax.models.model import Model
from ssl_jax.train.optim import class_weights, weighted_cross_entropy
from ssl_jax.train.step import (
    FinetuneConfig,
    TrainData,
    Trainer,
    _keys,
    epoch_order,
    initial_trainable,
)


class TrainingDivergedError(UserError):
    """Training produced a non-finite loss, gradient norm or parameter (usually too high a
    learning rate); the run stopped before saving anything from that step."""


_NONFINITE = ((1, "loss"), (2, "grad norm"), (4, "params"))


def _diverged(code: int, step: int, total: int, loss: float, grad_norm: float, run_dir: Path,
              good_step: int | None) -> TrainingDivergedError:
    what = [name for bit, name in _NONFINITE if code & bit]
    kept = (f"the last good checkpoint (step {good_step}) in {run_dir / 'checkpoints' / 'latest'}"
            " is untouched" if good_step is not None else "no checkpoint had been saved yet")
    return TrainingDivergedError(
        f"training diverged at step {step} of {total}: {' and '.join(what)} became non-finite "
        f"(loss {loss:g}, grad norm {grad_norm:g}); stopped without saving it, {kept}; lower "
        "--lr-head / --lr-backbone (or raise --warmup-ratio) and use a new --out folder")


@dataclass
class FinetuneResult:
    run_dir: Path
    history: list[dict]
    best_val_accuracy: float
    best_step: int | None
    steps: int  # global step reached (optimizer steps done, over every invocation)
    state: dict
    finished: bool
    start_step: int = 0  # global step this invocation started (resumed) from
    total_steps: int = 0  # steps of the whole run (epochs x steps per epoch)


def finetune(model: Model, data: TrainData, config: FinetuneConfig, run_dir: str | Path, *,
             resume: bool = True, stop_after_steps: int | None = None,
             mesh: Mesh | None = None, log: Callable[[str], None] = print,
             split_artifact: dict | None = None, extra_record: dict | None = None
             ) -> FinetuneResult:
    """Train `model` on `data` under `config`, checkpointing into `run_dir`.

    An existing run in `run_dir` is resumed from its latest checkpoint (it must have the same
    model, data split and settings, else CheckpointError). stop_after_steps: stop cleanly once
    the run's global step (optimizer steps over every invocation) reaches it — for tests and
    time-boxed runs; call again with a larger value, or None, to continue. A run already at
    or past it does nothing (result.steps == result.start_step).

    A step whose loss, gradient norm or updated parameters are not finite raises
    TrainingDivergedError naming the step; nothing of that step is saved.
    """
    t_start = time.perf_counter()
    check("stop_after_steps", stop_after_steps, RULES["max_steps"], allow_none=True)
    run_dir = Path(run_dir)
    spec = model.spec
    n_classes = len(data.class_names)
    bs = config.batch_size
    n_dev = (mesh.devices.size if mesh is not None else len(jax.local_devices()))
    if bs % n_dev:
        raise OptionError(f"batch size {bs} must be a multiple of the {n_dev} local devices")
    input_hw = tuple(data.train_images.shape[1:3])
    spec.layout(*input_hw)  # patch multiple check
    steps_per_epoch = math.ceil(len(data.train_images) / bs)
    total = steps_per_epoch * config.epochs
    training = {**config.record(), "total_steps": total, "steps_per_epoch": steps_per_epoch,
                "input_size": list(input_hw)}
    weights = (class_weights(data.train_labels, n_classes) if config.class_weighted else None)
    hf_config, hf_pre = hf_files_for(model)
    record = {
        "format": RUN_FORMAT, "spec": spec_to_json(spec), "source": model.source,
        "hf_config": hf_config, "hf_preprocessor": hf_pre,
        "base_sha256": tree_digest(model.params), "training": training,
        "class_names": list(data.class_names), "split_id": data.split_id,
        "num_train": len(data.train_images), "num_val": len(data.val_images),
        "class_weights": None if weights is None else [float(w) for w in weights],
        "seeds": {"seed": config.seed, "init": "fold_in(key(seed), 0)",
                  "shuffle": "fold_in(key(seed), 1), epoch",
                  "augment_and_dropout": "fold_in(key(seed), 2), step"},
        **(extra_record or {}),
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    if (run_dir / RUN_FILE).exists():
        if not resume:
            raise CheckpointError(f"{run_dir}: already holds a run (resume it, or pick a new "
                                  "folder)")
        compare_records(read_run(run_dir), record, where=str(run_dir))
    else:
        write_json(run_dir / RUN_FILE, record)
    if split_artifact is not None and not (run_dir / "split.json").exists():
        write_json(run_dir / "split.json", split_artifact)
    save_base(run_dir, model.params)

    k_init, k_shuffle, k_step = _keys(config.seed)
    trainer = Trainer(spec, config, training, n_classes, input_hw, weights, mesh, model.dtype)
    frozen = trainer.place(model.params if config.strategy != "full" else {})
    state = trainer.init_state(initial_trainable(spec, model.params, config.strategy, n_classes,
                                                 trainer.lora, k_init))
    meta: dict[str, Any] = {"history": [], "losses": [], "best_val_accuracy": -1.0,
                            "best_step": None, "epoch_loss_sum": 0.0, "epoch_correct": 0.0,
                            "epoch_count": 0.0}
    ckpts = RunCheckpoints(run_dir)
    try:
        got = ckpts.restore("latest", state) if resume else None
        if got is not None:
            step0, state, saved = got
            if not all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state)):
                raise TrainingDivergedError(
                    f"{run_dir / 'checkpoints' / 'latest' / str(step0)}: the latest checkpoint "
                    f"(step {step0}) holds non-finite values (a run that diverged); it cannot "
                    "be resumed — start again in a new --out folder with lower learning rates")
            meta.update({k: saved[k] for k in meta if k in saved})
            log(f"resumed {run_dir} at step {step0}/{total}")
        state = trainer.place(state)
        step = start_step = int(state["step"])
        timings = {"steps_s": 0.0, "eval_s": 0.0, "first_step_s": 0.0}
        while step < total:
            if stop_after_steps is not None and step >= stop_after_steps:
                break
            epoch, b = divmod(step, steps_per_epoch)
            order = epoch_order(k_shuffle, epoch, len(data.train_images))
            batches = list(padded_batches(order, bs))
            idx, n = batches[b]
            mask = (np.arange(bs) < n).astype(np.float32)
            t0 = time.perf_counter()
            state, m = trainer.train_step(state, frozen, data.train_images[idx],
                                          data.train_labels[idx].astype(np.int32), mask, k_step)
            m = jax.device_get(m)  # one host transfer of the step's scalars
            loss = float(m["loss"])
            dt = time.perf_counter() - t0
            timings["first_step_s" if step == 0 else "steps_s"] += dt
            step += 1
            if int(m["nonfinite"]):
                raise _diverged(int(m["nonfinite"]), step, total, loss, float(m["grad_norm"]),
                                run_dir, ckpts.latest.latest_step())
            meta["losses"].append(loss)
            meta["epoch_loss_sum"] += loss
            meta["epoch_correct"] += float(m["correct"])
            meta["epoch_count"] += float(m["count"])
            if b == steps_per_epoch - 1:  # epoch end: evaluate, then save best and latest
                t1 = time.perf_counter()
                val = evaluate(trainer, state["trainable"], frozen, data, bs)
                if not np.isfinite(val["val_loss"]) and len(data.val_images):
                    raise TrainingDivergedError(
                        f"training diverged at step {step} of {total}: the validation loss "
                        f"became non-finite ({val['val_loss']:g}; the parameters are finite "
                        "but overflow in the forward); stopped without saving it, last good "
                        f"checkpoint: step {ckpts.latest.latest_step()}; lower the learning "
                        "rates")
                timings["eval_s"] += time.perf_counter() - t1
                entry = {"epoch": epoch + 1, "step": step,
                         "train_loss": meta["epoch_loss_sum"] / steps_per_epoch,
                         "train_accuracy": meta["epoch_correct"] / max(meta["epoch_count"], 1),
                         **val}
                meta["history"].append(entry)
                meta.update(epoch_loss_sum=0.0, epoch_correct=0.0, epoch_count=0.0)
                log(f"epoch {epoch + 1}/{config.epochs}: train loss {entry['train_loss']:.4f}, "
                    f"val acc {val['val_accuracy']:.4f}")
                if val["val_accuracy"] > meta["best_val_accuracy"]:  # strict, as the original
                    meta["best_val_accuracy"], meta["best_step"] = val["val_accuracy"], step
                    ckpts.save_best(step, state["trainable"], {**entry, "kind": "best"})
                ckpts.save_latest(step, state, {**meta, "kind": "latest"})
            elif config.save_every and step % config.save_every == 0:
                ckpts.save_latest(step, state, {**meta, "kind": "latest"})
        finished = step >= total
        if not finished:
            ckpts.save_latest(step, state, {**meta, "kind": "latest"})
    finally:
        ckpts.close()
    if finished:
        _write_manifest(run_dir, record, meta, timings, time.perf_counter() - t_start, step)
    return FinetuneResult(run_dir, meta["history"], meta["best_val_accuracy"], meta["best_step"],
                          step, state, finished, start_step, total)


def evaluate(trainer: Trainer, trainable, frozen, data: TrainData, batch_size: int) -> dict:
    if len(data.val_images) == 0:
        return {"val_accuracy": float("nan"), "val_loss": float("nan")}
    logits = trainer.predict(trainable, frozen, data.val_images, batch_size)
    labels = data.val_labels.astype(np.int64)
    pred = logits.argmax(-1)
    loss = float(weighted_cross_entropy(jnp.asarray(logits), jnp.asarray(labels),
                                        trainer.weights))
    per_class = {}
    for c, name in enumerate(data.class_names):
        sel = labels == c
        if sel.any():
            per_class[name] = float((pred[sel] == c).mean())
    return {"val_accuracy": float((pred == labels).mean()), "val_loss": loss,
            "val_per_class_accuracy": per_class}


def _write_manifest(run_dir: Path, record: dict, meta: dict, timings: dict, wall: float,
                    steps: int) -> None:

    n_steady = max(steps - 1, 1)
    manifest = {
        "command": "finetune", "versions": versions(), "machine": machine(),
        "model_source": record["source"], "training": record["training"],
        "seeds": record["seeds"], "split_id": record["split_id"],
        "history": meta["history"], "best_val_accuracy": meta["best_val_accuracy"],
        "best_step": meta["best_step"],
        "timings_s": {"wall": round(wall, 3), "first_step (compile)": round(
            timings["first_step_s"], 3), "mean_step": round(timings["steps_s"] / n_steady, 4),
            "eval": round(timings["eval_s"], 3)},
    }
    write_json(run_dir / "manifest.json", manifest)
