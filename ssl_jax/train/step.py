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
from dataclasses import dataclass, field
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ssl_jax.core.batching import padded_batches
from ssl_jax.core.validate import RULES, OptionError, check
from ssl_jax.models.spec import ModelSpec
from ssl_jax.train.augment import AugmentConfig, prepare_batch
from ssl_jax.train.heads import batch_logits, init_head
from ssl_jax.train.lora import LoraConfig, init_lora
from ssl_jax.train.optim import make_optimizer, weighted_cross_entropy

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
        """Every setting checked by its rule in `ssl_jax.core.validate.RULES` (the CLI applies the
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


def epoch_order(shuffle_key: jax.Array, epoch: int, n: int) -> np.ndarray:
    return np.asarray(jax.random.permutation(jax.random.fold_in(shuffle_key, epoch), n))
