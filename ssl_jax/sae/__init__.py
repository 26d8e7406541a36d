"""Sparse autoencoders on the encoders' residual streams: activation capture, a JAX SAE
(training, external weights, metrics) and feature analysis (spatial maps scored against the
expert boxes, feature–label correlation with BH-FDR, monosemanticity)."""

from ssl_jax.sae.analysis import (
    Calibration,
    Correlation,
    SpatialScores,
    correlate,
    feature_maps,
    image_activations,
    label_matrix,
    monosemanticity,
    random_pair_calibration,
    score_features,
    select_tiers,
    spectrum_examples,
    type_masks,
)
from ssl_jax.sae.model import (
    SAE,
    SAEMetrics,
    TrainConfig,
    decode,
    encode,
    evaluate,
    init_sae,
    load_sae,
    save_sae,
    train_sae,
)
from ssl_jax.workflows.sae import (
    Activations,
    capture,
    capture_dataset,
    capture_images,
    load_activations,
    resolve_layer,
    save_activations,
)

__all__ = [
    "SAE", "Activations", "Calibration", "Correlation", "SAEMetrics", "SpatialScores",
    "TrainConfig", "capture", "capture_dataset", "capture_images", "correlate", "decode",
    "encode", "evaluate", "feature_maps", "image_activations", "init_sae", "label_matrix",
    "load_activations", "load_sae", "monosemanticity", "random_pair_calibration",
    "resolve_layer", "save_activations", "save_sae", "score_features", "select_tiers",
    "spectrum_examples", "train_sae", "type_masks",
]
