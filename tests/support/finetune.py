"""Shared helpers for the fine-tuning tests (no tests here): tiny transformers checkpoints
of the real architectures, saved as Hugging Face folders, and synthetic labelled images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ssl_jax.train import TrainData

CLASSES = ("Romanesque", "Gothic", "Renaissance", "Baroque")


def tiny_hf_model(alias: str, seed: int = 0, num_layers: int = 2):
    """An eval-mode transformers model of `alias`'s architecture at width 64, 4 heads,
    every parameter re-randomised (hf_reference rules)."""
    import transformers as tf

    from tests.support import hf_reference as ref

    cfg = ref.vision_config(alias)
    cfg.hidden_size, cfg.num_attention_heads, cfg.num_hidden_layers = 64, 4, num_layers
    if hasattr(cfg, "intermediate_size"):
        cfg.intermediate_size = 128
    if alias == "dinov2":
        cfg.mlp_ratio = 2
    cfg._attn_implementation = "eager"
    cls = {"dinov2": tf.Dinov2WithRegistersModel, "dinov3": tf.DINOv3ViTModel,
           "mae": tf.ViTMAEModel, "clip": tf.CLIPVisionModel,
           "siglip2": tf.SiglipVisionModel}[alias]
    import torch

    torch.manual_seed(seed)
    model = cls(cfg).eval()
    ref.randomize_(model, seed)
    return model


def save_tiny(alias: str, folder: Path, seed: int = 0) -> Path:
    tiny_hf_model(alias, seed).save_pretrained(folder)
    return folder


def synthetic_images(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images whose class shows as a coloured band (learnable in a few steps)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    rng.shuffle(labels)
    x = rng.integers(0, 80, (n, size, size, 3)).astype(np.uint8)
    band = size // 4
    for i, c in enumerate(labels):
        x[i, c * band:(c + 1) * band] += 150
    return x, labels.astype(np.int32)


def synthetic_data(size: int = 28, n_train: int = 24, n_val: int = 8) -> TrainData:
    a, b = synthetic_images(n_train, size, 0)
    c, d = synthetic_images(n_val, size, 1)
    return TrainData(a, b, c, d, CLASSES, split_id="synthetic")
