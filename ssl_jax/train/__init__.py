"""Fine-tuning maths: the jitted train step and its plan (full, linear head, LoRA), heads,
LoRA adapters, optimisers, augmentation and the linear probe. The run loop is
`ssl_jax.workflows.finetune`; run folders and export are `ssl_jax.io.runs`."""

from ssl_jax.train.augment import AugmentConfig, augment_one, prepare_batch
from ssl_jax.train.heads import batch_logits, feature_kind, features, init_head, logits
from ssl_jax.train.lora import LoraConfig, init_lora, merge
from ssl_jax.train.optim import class_weights, make_optimizer, schedule, weighted_cross_entropy
from ssl_jax.train.probe import ProbeResult, extract_features, linear_probe
from ssl_jax.train.step import STRATEGIES, FinetuneConfig, TrainData, Trainer, initial_trainable

__all__ = [
    "STRATEGIES", "AugmentConfig", "FinetuneConfig", "LoraConfig", "ProbeResult", "TrainData",
    "Trainer", "augment_one", "batch_logits", "class_weights", "extract_features",
    "feature_kind", "features", "init_head", "init_lora", "initial_trainable", "linear_probe",
    "logits", "make_optimizer", "merge", "prepare_batch", "schedule", "weighted_cross_entropy",
]
