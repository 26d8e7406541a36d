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

from ssl_jax.attention.registry import METHOD_NAMES, unknown_methods
from ssl_jax.core.errors import UserError
from ssl_jax.models.families import MODELS

PERCENTILES = (90, 85, 80, 75, 70, 60, 50)


class ConfigError(UserError):
    """A study setting of the wrong type or value (the message names the key)."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)  # TOML true is not 1


# each annotation of a StudyConfig field: (check of the value, what it must be)
_TYPES = {
    "str": (lambda v: isinstance(v, str), "a string"),
    "int": (_is_int, "an integer"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "tuple[str, ...]": (lambda v: isinstance(v, tuple | list)
                        and all(isinstance(x, str) for x in v), "a list of strings"),
    "tuple[int, ...]": (lambda v: isinstance(v, tuple | list) and all(_is_int(x) for x in v),
                        "a list of integers"),
    "dict[str, str]": (lambda v: isinstance(v, dict)
                       and all(isinstance(k, str) and isinstance(x, str) for k, x in v.items()),
                       "a table of strings"),
}


def _check_types(cfg: StudyConfig) -> None:
    """Every field against its annotation; raises ConfigError naming key, type and value."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        ok, expected = _TYPES[str(f.type)]
        if not ok(value):
            raise ConfigError(f"{f.name} must be {expected}, got {value!r}")


@dataclass(frozen=True)
class StudyConfig:
    """What one alignment study computes."""

    name: str = "study"
    dataset: str = "sample"  # "sample" (embedded) or a WikiChurches root folder
    models: tuple[str, ...] = tuple(MODELS)
    # map methods (ssl_jax.attention.registry; each model gets those it has): all by default
    methods: tuple[str, ...] = METHOD_NAMES
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
    # (the frame viewers show; boxes follow): ssl_jax.io.images
    orientation: str = "stored"
    allow_random_weights: bool = False
    weights: dict[str, str] = field(default_factory=dict)  # alias -> checkpoint source

    def __post_init__(self):
        _check_types(self)
        unknown = [m for m in self.models if m not in MODELS]
        if unknown:
            raise ConfigError(f"unknown model(s) {unknown} in study {self.name!r}; "
                             f"known: {list(MODELS)}")
        bad = unknown_methods(self.methods)
        if bad:
            raise ConfigError(f"unknown method(s) {bad} in study {self.name!r}; "
                             f"known: {list(METHOD_NAMES)}")
        if self.preprocess not in ("squash", "native"):
            raise ConfigError(f"preprocess must be 'squash' or 'native', got {self.preprocess!r}")
        if self.cache_dtype not in ("float32", "float16"):
            raise ConfigError(f"cache_dtype must be float32 or float16, got {self.cache_dtype!r}")
        for key, low in (("batch_size", 1), ("input_size", 1), ("heatmap_size", 1),
                         ("pointing_tolerance", 0), ("n_bootstrap", 2), ("n_random_trials", 1)):
            if getattr(self, key) < low:
                raise ConfigError(f"{key} must be >= {low}, got {getattr(self, key)}")
        for p in self.percentiles:
            if not 0 <= p <= 100:
                raise ConfigError(f"percentile {p} outside [0, 100]")
        if not self.percentiles:
            raise ConfigError("percentiles must name at least one percentile")
        if self.orientation not in ("stored", "exif"):
            raise ConfigError(f"orientation must be 'stored' or 'exif', got {self.orientation!r}")

    def replace(self, **changes: Any) -> StudyConfig:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(raw: dict[str, Any], where: str) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(StudyConfig)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {unknown}; known: {sorted(names)}")
    out = dict(raw)
    for key in ("models", "methods", "percentiles"):
        if key in out:
            if not isinstance(out[key], list):
                raise ConfigError(f"{where}: {key} must be a list, got {out[key]!r}")
            out[key] = tuple(out[key])
    return out


def load_config(path: str | Path) -> StudyConfig:
    """Read a study TOML (a `[study]` table, optional `[study.weights]`)."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"study config {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"study config {path} is not valid TOML: {e}") from None
    if "study" not in raw:
        raise ConfigError(f"study config {path} has no [study] table")
    # a relative dataset path is taken from the working directory, like a CLI path
    values = _coerce(raw["study"], str(path))
    try:
        return StudyConfig(**values)
    except ConfigError as e:
        raise ConfigError(f"study config {path}: {e}") from None


def bundled_config(name: str) -> StudyConfig:
    """A config shipped in the package: "sample" (the demo) or "wikichurches"."""
    ref = resources.files("ssl_jax.configs") / "study" / f"{name}.toml"
    if not ref.is_file():
        raise ConfigError(f"no bundled study config {name!r} (have: sample, wikichurches)")
    with resources.as_file(ref) as p:
        return load_config(p)
