"""Fine-tuning (full, linear head, LoRA) with optax and orbax, the linear probe, and the
frozen-vs-fine-tuned attention shift."""

from .augment import AugmentConfig, augment_one, prepare_batch
from .checkpoint import (
    FinetunedClassifier,
    RunCheckpoints,
    export_hf,
    is_finetuned_run,
    load_classifier,
    load_finetuned,
    params_to_state_dict,
)
from .heads import batch_logits, feature_kind, features, init_head, logits
from .lora import LoraConfig, init_lora, merge
from .optim import class_weights, make_optimizer, schedule, weighted_cross_entropy
from .probe import ProbeResult, extract_features, linear_probe
from .trainer import (
    STRATEGIES,
    FinetuneConfig,
    FinetuneResult,
    TrainData,
    Trainer,
    TrainingDivergedError,
    finetune,
    initial_trainable,
)

__all__ = [
    "STRATEGIES", "AugmentConfig", "FinetuneConfig", "FinetuneResult", "FinetunedClassifier",
    "LoraConfig", "ProbeResult", "RunCheckpoints", "TrainData", "Trainer",
    "TrainingDivergedError", "augment_one",
    "batch_logits", "class_weights", "export_hf", "extract_features", "feature_kind",
    "features", "finetune", "init_head", "init_lora", "initial_trainable", "is_finetuned_run",
    "linear_probe", "load_classifier", "load_finetuned", "logits", "make_optimizer", "merge",
    "params_to_state_dict", "prepare_batch", "schedule", "weighted_cross_entropy",
]
