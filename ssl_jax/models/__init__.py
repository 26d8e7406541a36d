"""The five encoders: specs, checkpoint loading and the jitted forward pass."""

from ssl_jax.models.checkpoint import SafetensorsFile, resolve_source
from ssl_jax.models.convert import CheckpointError, convert_state_dict, key_map, param_shapes
from ssl_jax.models.encoder import encode, init_params
from ssl_jax.models.inputs import PIXEL_BOUND, check_pixel_values, pixel_bound
from ssl_jax.models.model import EncoderOutput, Model, forward, load_model, random_model
from ssl_jax.models.spec import (
    MODELS,
    ConfigError,
    ModelInfo,
    ModelSpec,
    Preprocessing,
    TokenLayout,
    spec_from_config,
)

__all__ = [
    "MODELS", "PIXEL_BOUND", "CheckpointError", "ConfigError", "EncoderOutput", "Model", "ModelInfo", "ModelSpec",
    "Preprocessing", "SafetensorsFile", "TokenLayout", "check_pixel_values", "convert_state_dict",
    "encode", "forward",
    "init_params", "key_map", "load_model", "param_shapes", "pixel_bound", "random_model",
    "resolve_source",
    "spec_from_config",
]
