"""optax pieces: AdamW with separate LRs for backbone/adapters and head, warmup + cosine,
global-norm clipping, class-weighted cross-entropy, weight-decay masks."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

# leaves that get weight decay when norms and biases are spared: matrices only
_DECAYED = ("kernel", "a", "b")


def schedule(peak: float, total_steps: int, warmup_steps: int) -> optax.Schedule:
    """transformers' get_cosine_schedule_with_warmup: 0 → peak linearly over warmup, then a
    half cosine to 0 at total_steps (evaluated at the optimizer step count, starting at 0)."""
    total_steps = max(int(total_steps), 1)
    warmup_steps = min(max(int(warmup_steps), 0), total_steps)
    if warmup_steps == total_steps:
        return optax.linear_schedule(0.0, peak, warmup_steps)
    return optax.warmup_cosine_decay_schedule(0.0, peak, warmup_steps, total_steps, end_value=0.0)


def warmup_steps_for(total_steps: int, warmup_ratio: float) -> int:
    return int(warmup_ratio * total_steps)


def group_labels(trainable: dict) -> dict:
    """"head" for the classifier, "backbone" for backbone weights and LoRA adapters."""
    return {k: jax.tree.map(lambda _, k=k: "head" if k == "head" else "backbone", v)
            for k, v in trainable.items()}


def decay_mask(trainable: dict, decay_norms_and_biases: bool) -> dict:
    """True where weight decay applies. Everything (the original study) or only weight
    matrices (kernels, LoRA A/B): norms, biases, layerscale, tokens and position tables spared."""
    if decay_norms_and_biases:
        return jax.tree.map(lambda _: True, trainable)

    def leaf(path, _):
        last = path[-1]
        name = getattr(last, "key", getattr(last, "name", str(last)))
        return name in _DECAYED

    return jax.tree_util.tree_map_with_path(leaf, trainable)


def make_optimizer(trainable: dict, *, total_steps: int, lr_backbone: float, lr_head: float,
                   weight_decay: float = 0.01, warmup_ratio: float = 0.1,
                   max_grad_norm: float | None = 1.0, decay_norms_and_biases: bool = True,
                   b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
                   ) -> optax.GradientTransformation:
    """clip_by_global_norm (over all trainable params) → per-group AdamW with its schedule."""
    warm = warmup_steps_for(total_steps, warmup_ratio)
    # a callable mask: multi_transform hands each group the whole tree with the other
    # groups' leaves replaced by (leafless) MaskedNodes, so the mask is built per tree seen
    mask = None if decay_norms_and_biases else (lambda p: decay_mask(p, False))

    def adamw(lr):
        return optax.adamw(schedule(lr, total_steps, warm), b1=b1, b2=b2, eps=eps,
                           weight_decay=weight_decay, mask=mask)

    groups = {g: adamw(lr) for g, lr in (("backbone", lr_backbone), ("head", lr_head))}
    tx = optax.multi_transform(groups, group_labels(trainable))
    if max_grad_norm is not None and max_grad_norm > 0:
        tx = optax.chain(optax.clip_by_global_norm(max_grad_norm), tx)
    return tx


def class_weights(train_labels: Sequence[int], num_classes: int) -> np.ndarray:
    """The original's weights: w_c ∝ 1/(count_c + 1e-6), normalised to sum to num_classes."""
    counts = np.bincount(np.asarray(train_labels, np.int64), minlength=num_classes)
    w = 1.0 / (counts.astype(np.float64) + 1e-6)
    return (w / w.sum() * num_classes).astype(np.float32)


def weighted_cross_entropy(logits: jax.Array, labels: jax.Array, weights: jax.Array | None,
                           mask: jax.Array | None = None) -> jax.Array:
    """torch CrossEntropyLoss(weight=w): sum_i w_{y_i}·ce_i / sum_i w_{y_i} over real
    (mask = 1) examples; padding examples (mask = 0) count for nothing."""
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    w = jnp.ones_like(ce) if weights is None else jnp.asarray(weights, jnp.float32)[labels]
    if mask is not None:
        w = w * mask.astype(jnp.float32)
    return jnp.sum(w * ce) / jnp.maximum(jnp.sum(w), 1e-12)
