"""Static model description: architecture sizes, token layout and preprocessing.

A `ModelSpec` is frozen and hashable so it can be a `jax.jit` static argument; everything a
forward pass needs to know about *shape and math* lives here, everything learned lives in the
params pytree.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

from ssl_jax.core.errors import UserError

Family = Literal["dinov2", "dinov3", "mae", "clip", "siglip"]
Activation = Literal["gelu", "gelu_tanh", "quick_gelu"]

# transformers' `hidden_act` strings → our activation names.
_HF_ACTIVATIONS: dict[str, Activation] = {
    "gelu": "gelu",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_new": "gelu_tanh",
    "quick_gelu": "quick_gelu",
}


@dataclass(frozen=True)
class TokenLayout:
    """Where things sit in the token sequence: [CLS?, registers..., patches (row-major)]."""

    has_cls: bool
    num_registers: int
    grid_h: int
    grid_w: int

    @property
    def num_prefix(self) -> int:
        return int(self.has_cls) + self.num_registers

    @property
    def num_patches(self) -> int:
        return self.grid_h * self.grid_w

    @property
    def num_tokens(self) -> int:
        return self.num_prefix + self.num_patches

    @property
    def cls_index(self) -> int | None:
        return 0 if self.has_cls else None


@dataclass(frozen=True)
class Preprocessing:
    """The checkpoint's own image processor (HF semantics).

    resize_mode: "shortest_edge" keeps the aspect ratio (then centre crop), "exact" resizes
    to (height, width). resample uses PIL codes (2 bilinear, 3 bicubic).
    rescale_before_resize: DINOv3's processor resizes float pixels after rescaling.
    """

    resize_mode: Literal["shortest_edge", "exact"]
    size: tuple[int, int] | int  # int for shortest_edge, (h, w) for exact
    crop: tuple[int, int] | None
    resample: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    rescale_factor: float = 1 / 255
    rescale_before_resize: bool = False

    @property
    def input_size(self) -> tuple[int, int]:
        """The (height, width) of the model input the processor produces."""
        if self.crop is not None:
            return self.crop
        assert isinstance(self.size, tuple)
        return self.size


@dataclass(frozen=True)
class ModelSpec:
    family: Family
    hidden_size: int
    num_layers: int
    num_heads: int
    mlp_dim: int
    patch_size: int
    image_size: int  # size the checkpoint's position table was trained at
    num_channels: int
    layer_norm_eps: float
    activation: Activation
    num_registers: int
    has_cls: bool
    qkv_bias: tuple[bool, bool, bool]
    proj_bias: bool
    mlp_bias: bool
    patch_bias: bool
    layerscale: bool
    rope_theta: float | None  # DINOv3 only
    pre_norm: bool  # CLIP's pre_layrnorm on the embeddings
    final_norm: Literal["all", "none"]  # LN on every token of last_hidden_state, or none (CLIP)
    pooler: Literal["cls", "cls_postnorm", "map", "none"]
    preprocessing: Preprocessing

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def qkv_bias_slots(self) -> tuple[int, ...]:
        """The q/k/v slots (0, 1, 2) that carry a bias: the fused qkv bias parameter holds
        exactly these, in this order; an absent slot is no parameter at all (DINOv3's key)."""
        return tuple(i for i, present in enumerate(self.qkv_bias) if present)

    @property
    def pos_grid(self) -> int:
        """Side of the square learned position table (0 for RoPE models)."""
        return 0 if self.rope_theta is not None else self.image_size // self.patch_size

    @property
    def default_input_size(self) -> tuple[int, int]:
        return self.preprocessing.input_size

    def layout(self, height: int, width: int) -> TokenLayout:
        """Token layout for an input of (height, width) pixels; both must be patch multiples."""
        p = self.patch_size
        if height % p or width % p or height <= 0 or width <= 0:
            raise ValueError(
                f"{self.family}: input size {height}x{width} is not a positive multiple of the "
                f"patch size {p}"
            )
        return TokenLayout(self.has_cls, self.num_registers, height // p, width // p)

    def replace(self, **changes: Any) -> ModelSpec:
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------------------------
# The five study models
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelInfo:
    alias: str
    hub_id: str
    family: Family
    description: str


MODELS: dict[str, ModelInfo] = {
    m.alias: m
    for m in [
        ModelInfo("dinov2", "facebook/dinov2-with-registers-base", "dinov2",
                  "DINOv2 ViT-B/14 with 4 registers"),
        ModelInfo("dinov3", "facebook/dinov3-vitb16-pretrain-lvd1689m", "dinov3",
                  "DINOv3 ViT-B/16, 4 registers, 2-D RoPE"),
        ModelInfo("mae", "facebook/vit-mae-base", "mae", "MAE ViT-B/16 encoder (no masking)"),
        ModelInfo("clip", "openai/clip-vit-base-patch16", "clip", "CLIP ViT-B/16 vision tower"),
        ModelInfo("siglip2", "google/siglip2-base-patch16-224", "siglip",
                  "SigLIP 2 B/16 FixRes vision tower with MAP head"),
    ]
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


# --------------------------------------------------------------------------------------------
# config.json → ModelSpec
# --------------------------------------------------------------------------------------------

# transformers' config-class defaults for the keys our specs read: hub configs omit keys
# that equal these (SigLIP 2's vision_config is nearly empty), so they must be applied here.
_CLASS_DEFAULTS: dict[str, dict[str, Any]] = {
    "dinov2_with_registers": dict(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, mlp_ratio=4,
        hidden_act="gelu", layer_norm_eps=1e-6, image_size=224, patch_size=16, num_channels=3,
        qkv_bias=True, num_register_tokens=4, use_swiglu_ffn=False,
    ),
    "dinov3_vit": dict(
        patch_size=16, hidden_size=384, intermediate_size=1536, num_hidden_layers=12,
        num_attention_heads=6, hidden_act="gelu", layer_norm_eps=1e-5, rope_theta=100.0,
        image_size=224, num_channels=3, query_bias=True, key_bias=False, value_bias=True,
        proj_bias=True, mlp_bias=True, num_register_tokens=0, use_gated_mlp=False,
    ),
    "vit_mae": dict(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        hidden_act="gelu", layer_norm_eps=1e-12, image_size=224, patch_size=16, num_channels=3,
        qkv_bias=True,
    ),
    "clip_vision_model": dict(
        hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        num_channels=3, image_size=224, patch_size=32, hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    ),
    "siglip_vision_model": dict(
        hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        num_channels=3, image_size=224, patch_size=16, hidden_act="gelu_pytorch_tanh",
        layer_norm_eps=1e-6, vision_use_head=True,
    ),
}

# Composite configs keep the vision tower under `vision_config`.
_COMPOSITE = {"clip": "clip_vision_model", "siglip": "siglip_vision_model"}

_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_OPENAI = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
_HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))

# The processors of the real checkpoints (SPEC A6), used when a folder carries no
# preprocessor_config.json.
_DEFAULT_PREPROCESSING: dict[Family, Preprocessing] = {
    "dinov2": Preprocessing("shortest_edge", 256, (224, 224), 3, *_IMAGENET),
    "dinov3": Preprocessing("exact", (224, 224), None, 2, *_IMAGENET, rescale_before_resize=True),
    "mae": Preprocessing("exact", (224, 224), None, 2, *_IMAGENET),
    "clip": Preprocessing("shortest_edge", 224, (224, 224), 3, *_OPENAI),
    "siglip": Preprocessing("exact", (224, 224), None, 2, *_HALF),
}

_FAMILY_OF_TYPE: dict[str, Family] = {
    "dinov2_with_registers": "dinov2",
    "dinov3_vit": "dinov3",
    "vit_mae": "mae",
    "clip_vision_model": "clip",
    "siglip_vision_model": "siglip",
}


class ConfigError(UserError):
    """A config.json that does not describe one of the supported encoders."""


def vision_config(config: dict[str, Any], *, where: str = "config.json") -> tuple[str, dict]:
    """Return (vision model_type, vision config with class defaults filled in)."""
    model_type = config.get("model_type")
    if model_type in _COMPOSITE:
        if "vision_config" not in config:
            raise ConfigError(f"{where}: composite {model_type!r} config has no 'vision_config'")
        sub = dict(config["vision_config"] or {})
        model_type = _COMPOSITE[model_type]
        # a nested model_type, if present, must agree
        if sub.get("model_type", model_type) != model_type:
            raise ConfigError(
                f"{where}: vision_config.model_type is {sub['model_type']!r}, expected {model_type!r}"
            )
        config = sub
    if model_type not in _CLASS_DEFAULTS:
        supported = sorted(set(_CLASS_DEFAULTS) | set(_COMPOSITE))
        hint = ""
        if model_type == "siglip2_vision_model" or model_type == "siglip2":
            hint = (" (NaFlex SigLIP 2 checkpoints are a different architecture; the FixRes "
                    "'*-patch16-224' checkpoints use model_type 'siglip')")
        raise ConfigError(
            f"{where}: unsupported model_type {model_type!r}{hint}; supported: {supported}"
        )
    return model_type, {**_CLASS_DEFAULTS[model_type], **config}


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
    """Build a ModelSpec from a transformers config.json dict (and optional processor json)."""
    model_type, c = vision_config(config, where=where)
    family = _FAMILY_OF_TYPE[model_type]
    hidden, heads = int(c["hidden_size"]), int(c["num_attention_heads"])
    if hidden % heads:
        raise ConfigError(f"{where}: hidden_size {hidden} not divisible by {heads} heads")
    common = dict(
        family=family,
        hidden_size=hidden,
        num_layers=int(c["num_hidden_layers"]),
        num_heads=heads,
        patch_size=int(c["patch_size"]),
        image_size=int(c["image_size"]),
        num_channels=int(c["num_channels"]),
        layer_norm_eps=float(c["layer_norm_eps"]),
        activation=_activation(c["hidden_act"], where),
    )
    if family == "dinov2":
        if c.get("use_swiglu_ffn"):
            raise ConfigError(f"{where}: use_swiglu_ffn=true (ViT-g) is not supported")
        qkv = bool(c["qkv_bias"])
        spec = ModelSpec(
            **common, mlp_dim=int(hidden * c["mlp_ratio"]), num_registers=int(c["num_register_tokens"]),
            has_cls=True, qkv_bias=(qkv, qkv, qkv), proj_bias=True, mlp_bias=True, patch_bias=True,
            layerscale=True, rope_theta=None, pre_norm=False, final_norm="all", pooler="cls",
            preprocessing=_DEFAULT_PREPROCESSING[family],
        )
    elif family == "dinov3":
        if c.get("use_gated_mlp"):
            raise ConfigError(f"{where}: use_gated_mlp=true (SwiGLU DINOv3) is not supported")
        spec = ModelSpec(
            **common, mlp_dim=int(c["intermediate_size"]), num_registers=int(c["num_register_tokens"]),
            has_cls=True, qkv_bias=(bool(c["query_bias"]), bool(c["key_bias"]), bool(c["value_bias"])),
            proj_bias=bool(c["proj_bias"]), mlp_bias=bool(c["mlp_bias"]), patch_bias=True,
            layerscale=True, rope_theta=float(c["rope_theta"]), pre_norm=False, final_norm="all",
            pooler="cls", preprocessing=_DEFAULT_PREPROCESSING[family],
        )
    elif family == "mae":
        qkv = bool(c["qkv_bias"])
        spec = ModelSpec(
            **common, mlp_dim=int(c["intermediate_size"]), num_registers=0, has_cls=True,
            qkv_bias=(qkv, qkv, qkv), proj_bias=True, mlp_bias=True, patch_bias=True,
            layerscale=False, rope_theta=None, pre_norm=False, final_norm="all", pooler="none",
            preprocessing=_DEFAULT_PREPROCESSING[family],
        )
    elif family == "clip":
        spec = ModelSpec(
            **common, mlp_dim=int(c["intermediate_size"]), num_registers=0, has_cls=True,
            qkv_bias=(True, True, True), proj_bias=True, mlp_bias=True, patch_bias=False,
            layerscale=False, rope_theta=None, pre_norm=True, final_norm="none",
            pooler="cls_postnorm", preprocessing=_DEFAULT_PREPROCESSING[family],
        )
    else:  # siglip
        spec = ModelSpec(
            **common, mlp_dim=int(c["intermediate_size"]), num_registers=0, has_cls=False,
            qkv_bias=(True, True, True), proj_bias=True, mlp_bias=True, patch_bias=True,
            layerscale=False, rope_theta=None, pre_norm=False, final_norm="all",
            pooler="map" if c["vision_use_head"] else "none",
            preprocessing=_DEFAULT_PREPROCESSING[family],
        )
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
