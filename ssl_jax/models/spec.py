"""Static model description: architecture sizes, token layout and preprocessing.

A `ModelSpec` is frozen and hashable so it can be a `jax.jit` static argument; everything a
forward pass needs to know about *shape and math* lives here, everything learned lives in the
params pytree. Which family a spec belongs to (`ssl_jax.models.families`) decides its
embedding, pooling and checkpoint names; reading a config.json is `ssl_jax.models.config`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from ssl_jax.core.errors import UserError

Activation = Literal["gelu", "gelu_tanh", "quick_gelu"]


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


IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


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
    family: str  # a key of ssl_jax.models.families.FAMILIES
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


@dataclass(frozen=True)
class ModelInfo:
    """A named checkpoint of a family: the alias users type, its hub id, a one-line note."""

    alias: str
    hub_id: str
    family: str
    description: str


class ConfigError(UserError):
    """A config.json that does not describe one of the supported encoders."""
