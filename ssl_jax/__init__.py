"""ssl_jax: exact JAX/Flax ports of five self-supervised ViT encoders, and the study of
whether their attention falls on the regions human experts mark as diagnostic."""

from .models import (
    MODELS,
    CheckpointError,
    EncoderOutput,
    Model,
    ModelSpec,
    TokenLayout,
    forward,
    load_model,
    random_model,
)
from .preprocess import Transform, preprocess

__version__ = "0.1.0"

__all__ = [
    "MODELS", "CheckpointError", "EncoderOutput", "Model", "ModelSpec", "TokenLayout", "Transform",
    "__version__", "forward", "load_model", "preprocess", "random_model",
]
