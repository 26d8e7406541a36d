"""The encoders: specs, one module per family, checkpoint loading and the jitted forward pass."""

from ssl_jax.models.checkpoint import SafetensorsFile, resolve_source
from ssl_jax.models.collectors import (
    ClsAttention,
    Collector,
    FullAttention,
    HiddenStates,
    ProbabilityTap,
    ProbeAttention,
    Rollout,
    StateTap,
    attention_collectors,
)
from ssl_jax.models.config import bundled_spec, spec_from_config
from ssl_jax.models.convert import CheckpointError, convert_state_dict, key_map, param_shapes
from ssl_jax.models.encoder import encode, init_params
from ssl_jax.models.families import FAMILIES, MODELS
from ssl_jax.models.inputs import PIXEL_BOUND, check_pixel_values, pixel_bound
from ssl_jax.models.model import EncoderOutput, Model, forward, load_model, random_model
from ssl_jax.models.spec import (
    ConfigError,
    ModelInfo,
    ModelSpec,
    Preprocessing,
    TokenLayout,
)

__all__ = [
    "FAMILIES", "MODELS", "PIXEL_BOUND", "CheckpointError", "ClsAttention", "Collector",
    "ConfigError", "EncoderOutput", "FullAttention", "HiddenStates", "Model", "ModelInfo",
    "ModelSpec", "Preprocessing", "ProbabilityTap", "ProbeAttention", "Rollout",
    "SafetensorsFile", "StateTap", "TokenLayout", "attention_collectors", "bundled_spec",
    "check_pixel_values", "convert_state_dict", "encode", "forward", "init_params", "key_map",
    "load_model", "param_shapes", "pixel_bound", "random_model", "resolve_source",
    "spec_from_config",
]
