"""Study settings: a TOML file (configs/study/*.toml) read into a frozen dataclass.

Every field has a default equal to the original study's setting unless noted, so a config
file only states what differs; CLI flags override the file (`StudyConfig.replace`).
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..models.spec import MODELS

# methods the extractor knows; "<method>_heads" variants are per-head maps of cls / mean /
# probe. Which ones apply depends on the model (SigLIP has no CLS token, so no cls / rollout).
MAP_METHODS = ("cls", "cls_heads", "mean", "mean_heads", "rollout", "probe", "probe_heads")
PERCENTILES = (90, 85, 80, 75, 70, 60, 50)


@dataclass(frozen=True)
class StudyConfig:
    """What one alignment study computes."""

    name: str = "study"
    dataset: str = "sample"  # "sample" (embedded) or a WikiChurches root folder
    models: tuple[str, ...] = tuple(MODELS)
    methods: tuple[str, ...] = MAP_METHODS
    preprocess: str = "squash"  # SPEC decision 1
    input_size: int = 224
    batch_size: int = 8
    cache_dtype: str = "float32"  # "float16" halves the cache (the original stored float16)
    percentiles: tuple[int, ...] = PERCENTILES
    heatmap_size: int = 224  # maps are compared with boxes at this resolution (SPEC R4)
    pointing_tolerance: int = 0
    n_bootstrap: int = 10_000
    n_random_trials: int = 100
    seed: int = 0
    clamp: str = "clip"  # SPEC decision 7
    # EXIF orientation: "stored" frame as the original (warns per turned image) or "exif"
    # (the frame viewers show; boxes follow): ssl_jax.data.images
    orientation: str = "stored"
    allow_random_weights: bool = False
    weights: dict[str, str] = field(default_factory=dict)  # alias -> checkpoint source

    def __post_init__(self):
        unknown = [m for m in self.models if m not in MODELS]
        if unknown:
            raise ValueError(f"unknown model(s) {unknown} in study {self.name!r}; "
                             f"known: {list(MODELS)}")
        bad = [m for m in self.methods if m not in MAP_METHODS]
        if bad:
            raise ValueError(f"unknown method(s) {bad} in study {self.name!r}; "
                             f"known: {list(MAP_METHODS)}")
        if self.preprocess not in ("squash", "native"):
            raise ValueError(f"preprocess must be 'squash' or 'native', got {self.preprocess!r}")
        if self.cache_dtype not in ("float32", "float16"):
            raise ValueError(f"cache_dtype must be float32 or float16, got {self.cache_dtype!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        for p in self.percentiles:
            if not 0 <= p <= 100:
                raise ValueError(f"percentile {p} outside [0, 100]")
        if self.orientation not in ("stored", "exif"):
            raise UserError(f"orientation must be 'stored' or 'exif', got {self.orientation!r}")

    def replace(self, **changes: Any) -> StudyConfig:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(raw: dict[str, Any], where: str) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(StudyConfig)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) {unknown}; known: {sorted(names)}")
    out = dict(raw)
    for key in ("models", "methods", "percentiles"):
        if key in out:
            if not isinstance(out[key], list):
                raise ValueError(f"{where}: {key} must be a list, got {out[key]!r}")
            out[key] = tuple(out[key])
    return out


def load_config(path: str | Path) -> StudyConfig:
    """Read a study TOML (a `[study]` table, optional `[study.weights]`)."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"study config {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"study config {path} is not valid TOML: {e}") from None
    if "study" not in raw:
        raise ValueError(f"study config {path} has no [study] table")
    # a relative dataset path is taken from the working directory, like a CLI path
    return StudyConfig(**_coerce(raw["study"], str(path)))


def bundled_config(name: str) -> StudyConfig:
    """A config shipped in the package: "sample" (the demo) or "wikichurches"."""
    ref = resources.files("ssl_jax.configs") / "study" / f"{name}.toml"
    if not ref.is_file():
        raise ValueError(f"no bundled study config {name!r} (have: sample, wikichurches)")
    with resources.as_file(ref) as p:
        return load_config(p)
