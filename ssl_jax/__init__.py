"""ssl_jax: exact JAX/Flax ports of five self-supervised ViT encoders, and the study of
whether their attention falls on the regions human experts mark as diagnostic."""

from ssl_jax.io.weights import load_model
from ssl_jax.models import (
    MODELS,
    CheckpointError,
    EncoderOutput,
    Model,
    ModelSpec,
    TokenLayout,
    forward,
    random_model,
)
from ssl_jax.models.preprocess import Transform, preprocess

__version__ = "0.1.0"

__all__ = [
    "MODELS", "CheckpointError", "EncoderOutput", "Model", "ModelSpec", "TokenLayout", "Transform",
    "__version__", "forward", "load_model", "preprocess", "random_model",
]
