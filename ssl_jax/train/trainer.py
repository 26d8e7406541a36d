"""Fine-tuning: one jitted, data-parallel train step; resumable, bit-reproducible loop.

Fine-tuning is a plan of trainable vs frozen pytrees:
    full    trainable {"backbone", "head"}
    linear  trainable {"head"}; the backbone is frozen (never differentiated)
    lora    trainable {"lora" (adapters), "head"}; the base backbone is frozen
Every random draw comes from `jax.random.key(seed)`: head and adapter init from
fold_in(root, 0), the epoch shuffles from fold_in(root, 1) and epoch, augmentation and LoRA
dropout from fold_in(root, 2) and the global step. A run is therefore a pure function of
(weights, data, settings, seed): resumed from any saved step it ends bit-identical.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ..errors import UserError
from ..models.convert import CheckpointError
from ..models.model import Model
from ..models.spec import ModelSpec
from ..validate import RULES, OptionError, check
from .augment import AugmentConfig, prepare_batch
from .checkpoint import (
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
from .heads import batch_logits, init_head
from .lora import LoraConfig, init_lora
from .optim import class_weights, make_optimizer, weighted_cross_entropy

Strategy = Literal["full", "linear", "lora"]
STRATEGIES = ("full", "linear", "lora")
# backbone learning rates of the original study (R5.2): full 1e-5, LoRA 1e-4
DEFAULT_LR_BACKBONE = {"full": 1e-5, "lora": 1e-4, "linear": 0.0}


@dataclass(frozen=True)
class FinetuneConfig:
    strategy: Strategy = "full"
    epochs: int = 3
    batch_size: int = 16
    lr_backbone: float | None = None  # None: 1e-5 (full) / 1e-4 (lora)
    lr_head: float = 1e-3
    weight_decay: float = 0.01
    decay_norms_and_biases: bool = True  # False: decay weight matrices only
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    augment: bool = True
    class_weighted: bool = True
    seed: int = 42
    lora: LoraConfig = field(default_factory=LoraConfig)
    save_every: int = 0  # also save `latest` every N steps (0: at epoch ends only)

    def __post_init__(self):
        """Every setting checked by its rule in `ssl_jax.validate.RULES` (the CLI applies the
        same rules to the options): NaN, inf, negative or zero where meaningless refused."""
        if self.strategy not in STRATEGIES:
            raise OptionError(f"strategy must be one of {', '.join(STRATEGIES)}, got "
                              f"{self.strategy!r}")
        for name in ("epochs", "batch_size", "lr_head", "weight_decay", "warmup_ratio",
                     "seed", "save_every"):
            check(name, getattr(self, name), RULES[name])
        check("lr_backbone", self.lr_backbone, RULES["lr_backbone"], allow_none=True)
        check("max_grad_norm", self.max_grad_norm, RULES["max_grad_norm"], allow_none=True)
        for name in ("rank", "alpha", "dropout"):
            check(f"lora.{name}", getattr(self.lora, name), RULES[f"lora_{name}"])

    @property
    def backbone_lr(self) -> float:
        return DEFAULT_LR_BACKBONE[self.strategy] if self.lr_backbone is None else self.lr_backbone

    def record(self) -> dict:
        """JSON settings that determine the trained numbers (compared on resume)."""
        d = dataclasses.asdict(self)
        d["lr_backbone"] = self.backbone_lr
        d["lora"] = dataclasses.asdict(self.lora) if self.strategy == "lora" else None
        d.pop("save_every")
        return d


@dataclass
class TrainData:
    """Decoded images (uint8, already at the model input size) and labels."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    class_names: tuple[str, ...]
    train_ids: tuple[str, ...] = ()
    val_ids: tuple[str, ...] = ()
    split_id: str = ""

    def __post_init__(self):
        for name in ("train", "val"):
            im, lab = getattr(self, f"{name}_images"), getattr(self, f"{name}_labels")
            if im.ndim != 4 or im.shape[-1] != 3 or im.dtype != np.uint8:
                raise ValueError(f"{name}_images must be uint8 (N, H, W, 3), got {im.dtype} "
                                 f"{im.shape}")
            if len(im) != len(lab):
                raise ValueError(f"{len(im)} {name} images but {len(lab)} labels")
        if len(self.train_images) == 0:
            raise ValueError("no training images")
        n = len(self.class_names)
        for lab in (self.train_labels, self.val_labels):
            if len(lab) and (lab.min() < 0 or lab.max() >= n):
                raise ValueError(f"labels must lie in [0, {n}), got {lab.min()}..{lab.max()}")


def _keys(seed: int):
    root = jax.random.key(seed)
    return jax.random.fold_in(root, 0), jax.random.fold_in(root, 1), jax.random.fold_in(root, 2)


def initial_trainable(spec: ModelSpec, base: dict, strategy: str, num_classes: int,
                      lora: LoraConfig | None, key: jax.Array, *, abstract: bool = False) -> dict:
    def build(key):
        k_head, k_lora = jax.random.split(key)
        out: dict = {"head": init_head(k_head, spec.hidden_size, num_classes)}
        if strategy == "full":
            out["backbone"] = base
        elif strategy == "lora":
            assert lora is not None
            out["lora"] = init_lora(spec, lora, k_lora)
        return out

    return jax.eval_shape(build, key) if abstract else build(key)


def make_tx(training: dict, trainable: dict) -> optax.GradientTransformation:
    return make_optimizer(
        trainable, total_steps=training["total_steps"], lr_backbone=training["lr_backbone"],
        lr_head=training["lr_head"], weight_decay=training["weight_decay"],
        warmup_ratio=training["warmup_ratio"], max_grad_norm=training["max_grad_norm"],
        decay_norms_and_biases=training["decay_norms_and_biases"])


def initial_state_like(spec: ModelSpec, base: dict, training: dict, num_classes: int,
                       lora: LoraConfig | None) -> dict:
    """Shape structure of the full train state (for restoring `latest`)."""
    trainable = initial_trainable(spec, base, training["strategy"], num_classes, lora,
                                  jax.random.key(0), abstract=True)
    tx = make_tx(training, trainable)
    return jax.eval_shape(lambda t: {"step": jnp.zeros((), jnp.int32), "trainable": t,
                                     "opt_state": tx.init(t)}, trainable)


@dataclass(frozen=True)
class StepPlan:
    """Everything static about a train step (hashable: the jit cache key, so every run with
    the same model, strategy, shapes and optimizer settings reuses one compiled step)."""

    spec: ModelSpec
    strategy: str
    lora: LoraConfig | None
    augment: bool
    input_hw: tuple[int, int]
    dtype: Any
    optimizer: tuple[tuple[str, Any], ...]  # make_tx settings, sorted items

    @property
    def training(self) -> dict:
        return dict(self.optimizer)


_TX_KEYS = ("strategy", "total_steps", "lr_backbone", "lr_head", "weight_decay",
            "warmup_ratio", "max_grad_norm", "decay_norms_and_biases")


def _forward(plan: StepPlan, trainable, frozen, pixels, drop_key):
    lora = plan.lora
    backbone = trainable["backbone"] if "backbone" in trainable else frozen
    keys = None
    if lora is not None and drop_key is not None and lora.dropout > 0:
        keys = jax.random.split(drop_key, pixels.shape[0])
    return batch_logits(plan.spec, backbone, trainable["head"], pixels,
                        adapters=trainable.get("lora"), lora=lora, keys=keys, dtype=plan.dtype)


def _pixels(plan: StepPlan, images, key):
    p = plan.spec.preprocessing
    aug = AugmentConfig() if plan.augment and key is not None else None
    return prepare_batch(images, key if aug is not None else None, plan.input_hw, p.mean, p.std,
                         aug)


@functools.partial(jax.jit, static_argnames=("plan",), donate_argnums=(0,))
def train_step(state, frozen, images, labels, mask, weights, step_root, *, plan: StepPlan):
    """One optimizer step: augment (key = fold_in(step_root, step)), forward, class-weighted
    CE over the real (mask = 1) examples, clip + AdamW. Returns (new state, metrics)."""
    k = jax.random.fold_in(step_root, state["step"])
    k_aug, k_drop = jax.random.split(k)
    pixels = _pixels(plan, images, k_aug)

    def loss_fn(trainable):
        logits = _forward(plan, trainable, frozen, pixels, k_drop)
        return weighted_cross_entropy(logits, labels, weights, mask), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["trainable"])
    tx = make_tx(plan.training, state["trainable"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["trainable"])
    trainable = optax.apply_updates(state["trainable"], updates)
    m = mask.astype(jnp.float32)
    correct = jnp.sum((jnp.argmax(logits, -1) == labels) * m)
    grad_norm = optax.global_norm(grads)
    finite_params = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x))
                                       for x in jax.tree.leaves(trainable)]))
    # bit 0: loss, bit 1: gradient norm, bit 2: updated parameters not finite (read by the
    # host with the loss it fetches anyway: no extra sync)
    nonfinite = (jnp.int32(1) * ~jnp.isfinite(loss) + jnp.int32(2) * ~jnp.isfinite(grad_norm)
                 + jnp.int32(4) * ~finite_params)
    metrics = {"loss": loss, "correct": correct, "count": jnp.sum(m), "grad_norm": grad_norm,
               "nonfinite": nonfinite}
    return {"step": state["step"] + 1, "trainable": trainable, "opt_state": opt_state}, metrics


@functools.partial(jax.jit, static_argnames=("plan",))
def eval_logits(trainable, frozen, images, *, plan: StepPlan):
    """Logits without augmentation or dropout."""
    return _forward(plan, trainable, frozen, _pixels(plan, images, None), None)


class Trainer:
    """Host side of training: the step plan, device placement (data parallel over a 1-D
    "data" mesh of the local devices) and padded evaluation batches."""

    def __init__(self, spec: ModelSpec, config: FinetuneConfig, training: dict,
                 num_classes: int, input_hw: tuple[int, int], weights: np.ndarray | None,
                 mesh: Mesh | None = None, dtype=jnp.float32):
        self.spec, self.config, self.training = spec, config, training
        self.num_classes, self.input_hw = num_classes, tuple(input_hw)
        self.lora = config.lora if config.strategy == "lora" else None
        w = np.ones(num_classes, np.float32) if weights is None else weights
        self.weights = jnp.asarray(w, jnp.float32)
        self.plan = StepPlan(spec, config.strategy, self.lora, config.augment,
                             self.input_hw, jnp.dtype(dtype).type,
                             tuple(sorted((k, _hashable(training[k])) for k in _TX_KEYS)))
        self.mesh = mesh if mesh is not None else Mesh(np.asarray(jax.local_devices()), ("data",))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self.batched = NamedSharding(self.mesh, PartitionSpec("data"))

    def init_state(self, trainable: dict) -> dict:
        # own buffers: the train step donates the state, which must never free the caller's
        # arrays (the full strategy starts from the model's own params)
        trainable = jax.tree.map(jnp.copy, trainable)
        tx = make_tx(self.training, trainable)
        return {"step": jnp.zeros((), jnp.int32), "trainable": trainable,
                "opt_state": tx.init(trainable)}

    def place(self, tree):
        return jax.device_put(tree, self.replicated)

    def place_batch(self, *arrays):
        return tuple(jax.device_put(a, self.batched) for a in arrays)

    def train_step(self, state, frozen, images, labels, mask, step_root):
        images, labels, mask = self.place_batch(images, labels, mask)
        return train_step(state, frozen, images, labels, mask, self.weights, step_root,
                          plan=self.plan)

    def predict(self, trainable, frozen, images: np.ndarray, batch_size: int) -> np.ndarray:
        """(N, C) logits, in fixed padded batches."""
        out = []
        for idx, n in padded_batches(np.arange(len(images)), batch_size):
            (x,) = self.place_batch(images[idx])
            out.append(np.asarray(eval_logits(trainable, frozen, x, plan=self.plan))[:n])
        return np.concatenate(out) if out else np.zeros((0, self.num_classes), np.float32)


def _hashable(v):
    return tuple(_hashable(x) for x in v) if isinstance(v, (list, tuple)) else v


def padded_batches(order: np.ndarray, batch_size: int):
    """Yield (indices padded to batch_size by repeating the first, real count)."""
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        n = len(idx)
        if n < batch_size:
            idx = np.concatenate([idx, np.full(batch_size - n, order[0])])
        yield idx, n


def epoch_order(shuffle_key: jax.Array, epoch: int, n: int) -> np.ndarray:
    return np.asarray(jax.random.permutation(jax.random.fold_in(shuffle_key, epoch), n))


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
    from ..study.manifest import machine, versions

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
