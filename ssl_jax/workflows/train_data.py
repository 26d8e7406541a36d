"""Images and labels for fine-tuning and probing, from a WikiChurches-layout folder.

Labels and the train/val split come from `ssl_jax.io.dataset` (churches.json first-style labels;
the primary policy keeps every annotated evaluation image out of train and val). Images are
decoded once and squashed (whole image, no crop) to the model input size with the
checkpoint's resample filter, kept as uint8; normalisation and augmentation happen in JAX.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ssl_jax.io.dataset import PRIMARY_POLICY, STYLE_NAMES, dataset_root, load_dataset, make_split
from ssl_jax.io.images import open_rgb
from ssl_jax.models.spec import ModelSpec
from ssl_jax.workflows.finetune import TrainData


def decode_images(paths: Sequence[Path], size: tuple[int, int], resample: int) -> np.ndarray:
    """(N, H, W, 3) uint8: each image converted to RGB and resized (squash) to `size`."""
    out = np.zeros((len(paths), size[0], size[1], 3), np.uint8)
    for i, p in enumerate(paths):
        out[i] = np.asarray(open_rgb(p).resize((size[1], size[0]), resample))
    return out


def load_training_data(dataset: str | Path, spec: ModelSpec, *,
                       input_size: tuple[int, int] | None = None, seed: int = 42,
                       val_fraction: float = 0.2, policy: str | None = None,
                       experiment_id: str = "ssl_jax"):
    """(TrainData, split artifact) for a dataset folder (or "sample")."""
    root = dataset_root(dataset)
    ds = load_dataset(root, require_churches=True)
    split = make_split(ds, seed=seed, val_fraction=val_fraction,
                       policy=policy or PRIMARY_POLICY, experiment_id=experiment_id)
    items = {it.image_id: it for it in ds.images(labeled_only=True)}
    size = tuple(input_size) if input_size is not None else spec.default_input_size
    spec.layout(*size)
    resample = spec.preprocessing.resample

    def part(ids):
        ids = sorted(ids)
        images = decode_images([items[i].path for i in ids], size, resample)
        labels = np.asarray([items[i].style_label for i in ids], np.int32)
        return ids, images, labels

    tr_ids, tr_im, tr_lab = part(split.train_image_ids)
    va_ids, va_im, va_lab = part(split.val_image_ids)
    data = TrainData(tr_im, tr_lab, va_im, va_lab, tuple(STYLE_NAMES), tuple(tr_ids),
                     tuple(va_ids), split.split_id)
    return data, split
