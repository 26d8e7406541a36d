"""Numeric settings checked once, up front, by one rule per setting.

A `Range` states what a number may be (integer or real, bounds, open or closed); `check`
refuses anything else — NaN, ±inf, a value float32 cannot hold, the wrong type, out of
range — with an `OptionError` (a `UserError`) of one line naming the setting and the value.
The same rules serve the library (config dataclasses call `check` with the field name) and
the command line (`cli_check(rule)` is a click callback that names the option, e.g.
``--lr-head``), so `finetune`, `probe` and `shift` refuse a bad number before any work is
done or any file is written.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ssl_jax.core.errors import UserError

_FLOAT32_MAX = float(np.finfo(np.float32).max)


class OptionError(UserError):
    """A setting (CLI option or config field) with a value it cannot take."""


@dataclass(frozen=True)
class Range:
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # lo itself excluded
    hi_open: bool = False
    integer: bool = False
    note: str = ""  # appended to the message (e.g. what 0 means)

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a finite number"
        parts = []
        if self.lo is not None:
            parts.append(f"{'>' if self.lo_open else '>='} {_fmt(self.lo)}")
        if self.hi is not None:
            parts.append(f"{'<' if self.hi_open else '<='} {_fmt(self.hi)}")
        return kind + (" " + " and ".join(parts) if parts else "")

    def ok(self, value) -> bool:
        if isinstance(value, (bool, np.bool_)):
            return False
        if self.integer:
            if not isinstance(value, (numbers.Integral, np.integer)):
                return False
        elif not isinstance(value, (numbers.Real, np.integer, np.floating)):
            return False
        v = float(value)
        if not math.isfinite(v) or abs(v) > _FLOAT32_MAX:
            return False
        if self.lo is not None and (v < self.lo or (self.lo_open and v == self.lo)):
            return False
        return not (self.hi is not None and (v > self.hi or (self.hi_open and v == self.hi)))


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def check(name: str, value, rule: Range, *, allow_none: bool = False):
    """`value` if `rule` allows it (None too when allow_none), else OptionError naming `name`."""
    if value is None and allow_none:
        return value
    if not rule.ok(value):
        note = f" ({rule.note})" if rule.note else ""
        if isinstance(value, numbers.Real) and math.isfinite(float(value)) \
                and abs(float(value)) > _FLOAT32_MAX:
            note += f" (beyond float32, whose largest value is {_FLOAT32_MAX:.4g})"
        raise OptionError(f"{name} must be {rule.describe()}{note}, got {value!r}")
    return value


def check_all(name: str, values, rule: Range) -> tuple:
    """Every element of a sequence (named `name`), at least one."""
    values = tuple(values)
    if not values:
        raise OptionError(f"{name}: no values given")
    for v in values:
        check(name, v, rule)
    return values


def cli_check(rule: Range) -> Callable:
    """A click callback applying `rule` to an option's value (None: not given, passes)."""

    def callback(ctx, param, value):
        name = max(param.opts, key=len) if param.opts else param.name
        if isinstance(value, tuple):  # multiple=True
            return tuple(check(name, v, rule) for v in value)
        return check(name, value, rule, allow_none=True)

    return callback


def cli_float_list(rule: Range) -> Callable:
    """A click callback for a comma-separated list of numbers ("90,50"), each under `rule`."""

    def callback(ctx, param, value):
        name = max(param.opts, key=len) if param.opts else param.name
        if value is None:
            return None
        out = []
        for part in str(value).split(","):
            if not part.strip():
                continue
            try:
                v = float(part)
            except ValueError:
                raise OptionError(f"{name} must be comma-separated numbers, got {part.strip()!r} "
                                  f"in {value!r}") from None
            out.append(check(name, v, rule))
        if not out:
            raise OptionError(f"{name}: no values given in {value!r}")
        return tuple(out)

    return callback


# ---- the rules of the training settings (library field name → rule) ---------------------------

POSITIVE_INT = Range(1, integer=True)
NONNEG_INT = Range(0, integer=True)
SEED = Range(0, 2**32 - 1, integer=True)  # numpy / sklearn / jax.random seeds alike
POSITIVE = Range(0, lo_open=True)
NONNEG = Range(0)
FRACTION_OPEN = Range(0, 1, lo_open=True, hi_open=True)

RULES: dict[str, Range] = {
    "epochs": POSITIVE_INT,
    "batch_size": POSITIVE_INT,
    "lr_backbone": NONNEG,
    "lr_head": POSITIVE,
    "weight_decay": NONNEG,
    "warmup_ratio": Range(0, 1),
    "max_grad_norm": Range(0, note="0: no clipping"),
    "seed": SEED,
    "save_every": Range(0, integer=True, note="0: at epoch ends only"),
    "max_steps": POSITIVE_INT,
    "lora_rank": POSITIVE_INT,
    "lora_alpha": POSITIVE,
    "lora_dropout": Range(0, 1, hi_open=True),
    "input_size": POSITIVE_INT,
    "val_fraction": FRACTION_OPEN,
    "folds": Range(2, integer=True),
    "size": POSITIVE_INT,
    "percentile": Range(0, 100),
    "resamples": POSITIVE_INT,
    "layer": Range(integer=True),
}


def rule(field: str) -> Callable:
    """The click callback of setting `field` (one of RULES)."""
    return cli_check(RULES[field])
