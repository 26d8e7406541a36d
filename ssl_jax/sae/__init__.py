"""Sparse autoencoders on the encoders' residual streams: activation capture, a JAX SAE
(training, metrics) and feature analysis (spatial maps scored against the
expert boxes, feature–label correlation with BH-FDR, monosemanticity).

Capture is `ssl_jax.workflows.sae`; SAE files and resumable training state `ssl_jax.io.sae_files`."""

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
    train_sae,
)

__all__ = [
    "SAE", "Calibration", "Correlation", "SAEMetrics", "SpatialScores",
    "TrainConfig", "correlate", "decode",
    "encode", "evaluate", "feature_maps", "image_activations", "init_sae", "label_matrix",
    "monosemanticity", "random_pair_calibration",
    "score_features", "select_tiers",
    "spectrum_examples", "train_sae", "type_masks",
]
