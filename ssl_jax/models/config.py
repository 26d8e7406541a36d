"""config.json → ModelSpec: the family of a transformers config, and the bundled configs of
the study checkpoints (no download, no weights)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from ssl_jax.models.families import BY_COMPOSITE_TYPE, BY_MODEL_TYPE, MODELS
from ssl_jax.models.spec import Activation, ConfigError, ModelSpec, Preprocessing

# transformers' `hidden_act` strings → our activation names.
_HF_ACTIVATIONS: dict[str, Activation] = {
    "gelu": "gelu",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_new": "gelu_tanh",
    "quick_gelu": "quick_gelu",
}


def bundled_checkpoint_files(alias: str) -> dict[str, Any]:
    """The real checkpoint's config.json and preprocessor_config.json, shipped with ssl_jax."""
    if alias not in MODELS:
        raise KeyError(f"unknown model alias {alias!r}; known: {', '.join(MODELS)}")
    text = resources.files("ssl_jax.configs").joinpath("models", f"{alias}.json").read_text()
    return json.loads(text)


def bundled_spec(alias: str) -> ModelSpec:
    """The spec of a study model from its shipped real config (no download, no weights)."""
    files = bundled_checkpoint_files(alias)
    return spec_from_config(files["config"], files.get("preprocessor_config"),
                            where=f"bundled config of {alias}")


def vision_config(config: dict[str, Any], *, where: str = "config.json") -> tuple[str, dict]:
    """Return (vision model_type, vision config with the family's class defaults filled in:
    hub configs omit keys that equal transformers' defaults, SigLIP 2's vision_config is
    nearly empty)."""
    model_type = config.get("model_type")
    if model_type in BY_COMPOSITE_TYPE:
        if "vision_config" not in config:
            raise ConfigError(f"{where}: composite {model_type!r} config has no 'vision_config'")
        sub = dict(config["vision_config"] or {})
        model_type = BY_COMPOSITE_TYPE[model_type].MODEL_TYPE
        # a nested model_type, if present, must agree
        if sub.get("model_type", model_type) != model_type:
            raise ConfigError(
                f"{where}: vision_config.model_type is {sub['model_type']!r}, expected {model_type!r}"
            )
        config = sub
    if model_type not in BY_MODEL_TYPE:
        supported = sorted(set(BY_MODEL_TYPE) | set(BY_COMPOSITE_TYPE))
        hints = [getattr(m, "NOT_THIS", {}).get(model_type) for m in BY_MODEL_TYPE.values()]
        hint = "".join(f" ({h})" for h in hints if h)
        raise ConfigError(
            f"{where}: unsupported model_type {model_type!r}{hint}; supported: {supported}"
        )
    return model_type, {**BY_MODEL_TYPE[model_type].CLASS_DEFAULTS, **config}


def _activation(name: str, where: str) -> Activation:
    try:
        return _HF_ACTIVATIONS[name]
    except KeyError:
        raise ConfigError(f"{where}: unsupported hidden_act {name!r}") from None


def spec_from_config(
    config: dict[str, Any],
    preprocessor: dict[str, Any] | None = None,
    *,
    where: str = "config.json",
) -> ModelSpec:
    """Build a ModelSpec from a transformers config.json dict (and optional processor json):
    the sizes every family shares are read here, the rest by the family (`spec_from_hf`)."""
    model_type, c = vision_config(config, where=where)
    hidden, heads = int(c["hidden_size"]), int(c["num_attention_heads"])
    if hidden % heads:
        raise ConfigError(f"{where}: hidden_size {hidden} not divisible by {heads} heads")
    fam = BY_MODEL_TYPE[model_type]
    common = dict(
        family=fam.NAME,
        hidden_size=hidden,
        num_layers=int(c["num_hidden_layers"]),
        num_heads=heads,
        patch_size=int(c["patch_size"]),
        image_size=int(c["image_size"]),
        num_channels=int(c["num_channels"]),
        layer_norm_eps=float(c["layer_norm_eps"]),
        activation=_activation(c["hidden_act"], where),
    )
    spec = fam.spec_from_hf(c, common, where)
    if preprocessor is not None:
        spec = spec.replace(preprocessing=preprocessing_from_config(
            preprocessor, spec.preprocessing, where="preprocessor_config.json"))
    return spec


def preprocessing_from_config(
    p: dict[str, Any], default: Preprocessing, *, where: str = "preprocessor_config.json"
) -> Preprocessing:
    """Read an HF preprocessor_config.json; keys it omits keep the checkpoint family's values."""
    size = p.get("size", None)
    resize_mode, size_value = default.resize_mode, default.size
    if isinstance(size, int):
        # legacy int: shortest edge for CLIP/Bit processors (default_to_square=False), else square
        if default.resize_mode == "shortest_edge":
            size_value = size
        else:
            resize_mode, size_value = "exact", (size, size)
    elif isinstance(size, dict):
        if "shortest_edge" in size:
            resize_mode, size_value = "shortest_edge", int(size["shortest_edge"])
        elif "height" in size and "width" in size:
            resize_mode, size_value = "exact", (int(size["height"]), int(size["width"]))
        else:
            raise ConfigError(f"{where}: unsupported size {size!r}")
    crop = default.crop
    if "do_center_crop" in p and not p["do_center_crop"]:
        crop = None
    elif "crop_size" in p and p.get("do_center_crop", default.crop is not None):
        cs = p["crop_size"]
        crop = (cs, cs) if isinstance(cs, int) else (int(cs["height"]), int(cs["width"]))
    if resize_mode == "shortest_edge" and crop is None:
        raise ConfigError(f"{where}: shortest_edge resize without a centre crop is not supported")
    mean = tuple(float(v) for v in p.get("image_mean", default.mean))
    std = tuple(float(v) for v in p.get("image_std", default.std))
    if len(mean) != 3 or len(std) != 3:
        raise ConfigError(f"{where}: image_mean/image_std must have 3 values")
    return Preprocessing(
        resize_mode=resize_mode,
        size=size_value,
        crop=crop,
        resample=int(p.get("resample", default.resample)),
        mean=mean,  # type: ignore[arg-type]
        std=std,  # type: ignore[arg-type]
        rescale_factor=float(p.get("rescale_factor", default.rescale_factor)),
        rescale_before_resize=default.rescale_before_resize,
    )
