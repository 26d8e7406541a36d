"""The encoder families, one module each, and the registry of study checkpoints.

A family module holds everything specific to its architecture, so that adding an encoder is
one module plus one line in `_MODULES`:

    NAME                 the family's name (`ModelSpec.family`)
    MODELS               its named checkpoints (`ModelInfo`: alias, hub id, description)
    MODEL_TYPE           transformers' vision model_type it reads; COMPOSITE_TYPE the
                         model_type of a composite config holding it under `vision_config`
    CLASS_DEFAULTS       transformers' config-class defaults for the keys it reads
    PREPROCESSING        the checkpoint's processor, for folders without preprocessor_config
    spec_from_hf(c, common, where) -> ModelSpec
    param_shapes(spec)   shapes of everything outside the layer stack ("embed", norms, heads)
    key_map(spec)        checkpoint names of every tensor (`ssl_jax.models.keymap.Entry`);
                         WRAPPER_PREFIXES / IGNORED_KEYS: prefixes stripped and keys skipped
                         on load; export_prefix(config): the prefix written on export
    embed(spec, params, pixels, dtype) -> (tokens, layout, rope tables or None)
    pool(spec, params, x, dtype) -> {"last_hidden_state", "pooled"?, "probe_attention"?}

Optional: NOT_THIS, {model_type: hint} for look-alike model_types it does not read.
The layer stack, the encoder loop and the conversion machinery are shared.
"""

from __future__ import annotations

from types import ModuleType

from ssl_jax.models.families import clip, dinov2, dinov3, mae, siglip
from ssl_jax.models.spec import ModelInfo, ModelSpec

_MODULES: tuple[ModuleType, ...] = (dinov2, dinov3, mae, clip, siglip)

FAMILIES: dict[str, ModuleType] = {m.NAME: m for m in _MODULES}
MODELS: dict[str, ModelInfo] = {info.alias: info for m in _MODULES for info in m.MODELS}
BY_MODEL_TYPE: dict[str, ModuleType] = {m.MODEL_TYPE: m for m in _MODULES}
BY_COMPOSITE_TYPE: dict[str, ModuleType] = {m.COMPOSITE_TYPE: m for m in _MODULES
                                            if m.COMPOSITE_TYPE is not None}


def family(spec: ModelSpec) -> ModuleType:
    """The family module of `spec`."""
    try:
        return FAMILIES[spec.family]
    except KeyError:
        raise ValueError(f"unknown model family {spec.family!r}; known: "
                         f"{', '.join(FAMILIES)}") from None


__all__ = ["BY_COMPOSITE_TYPE", "BY_MODEL_TYPE", "FAMILIES", "MODELS", "family"]
