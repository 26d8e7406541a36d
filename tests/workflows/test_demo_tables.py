"""Behaviour preservation: `ssl-jax demo` (the whole study on the embedded sample dataset, on
random weights) writes the tables recorded before the issue-13 restructure
(tests/data/demo_tables/README.md): same columns, same rows in the same order, equal strings,
and every number within |current - recorded| <= 1e-7 * max(1, |recorded|) (absolute for
values up to 1, relative above; NaN only where NaN was recorded)."""

from __future__ import annotations

import csv
import gzip
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

RECORDED = Path(__file__).resolve().parents[1] / "data" / "demo_tables"
TABLES = ("per_image.csv", "summary.csv", "by_feature.csv", "by_style.csv", "heads.csv",
          "compare.csv")
MODELS = ("dinov2", "dinov3", "mae", "clip", "siglip2")
TOLERANCE = 1e-7


def read_table(path: Path) -> tuple[list[str], list[list[str]]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as f:
        header, *rows = list(csv.reader(f))
    return header, rows


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def table_differences(recorded, current, limit: int = 10) -> list[str]:
    """Every way `current` (header, rows) differs from `recorded`, the first `limit` cells."""
    (head_a, rows_a), (head_b, rows_b) = recorded, current
    if head_a != head_b:
        return [f"columns {head_b} != recorded {head_a}"]
    if len(rows_a) != len(rows_b):
        return [f"{len(rows_b)} rows != recorded {len(rows_a)}"]
    out = []
    for i, (ra, rb) in enumerate(zip(rows_a, rows_b, strict=True)):
        for col, a, b in zip(head_a, ra, rb, strict=True):
            x, y = _number(a), _number(b)
            if x is None or y is None:
                same = a == b
            elif math.isnan(x) or math.isnan(y):
                same = math.isnan(x) and math.isnan(y)
            elif math.isinf(x) or math.isinf(y):
                same = x == y
            else:
                same = abs(y - x) <= TOLERANCE * max(1.0, abs(x))
            if not same:
                out.append(f"row {i + 2} column {col!r}: {b!r} != recorded {a!r}")
                if len(out) >= limit:
                    return out
    return out


# ------------------------------------------------------------------ the comparison itself


def test_any_moved_number_or_string_is_a_difference():
    recorded = read_table(RECORDED / "summary.csv.gz")
    head, rows = recorded
    assert table_differences(recorded, (head, [r[:] for r in rows])) == []
    (i, j), value = next(((i, j), float(c)) for i, r in enumerate(rows)
                         for j, c in enumerate(r) if (_number(c) or 0.0) != 0.0
                         and math.isfinite(float(c)))
    for delta, differs in ((2e-7, True), (0.05 * TOLERANCE, False)):
        moved = [r[:] for r in rows]
        moved[i][j] = repr(value + delta * max(1.0, abs(value)))
        assert bool(table_differences(recorded, (head, moved))) == differs, (delta, value)
    text = next(j for j, c in enumerate(rows[0]) if _number(c) is None)
    renamed = [r[:] for r in rows]
    renamed[0][text] += "x"
    assert table_differences(recorded, (head, renamed))
    assert table_differences(recorded, (head, rows[:-1]))
    assert table_differences(recorded, (head[:-1], [r[:-1] for r in rows]))


# ------------------------------------------------------------------ the demo, run as a user does


@pytest.fixture(scope="module")
def demo_results(tmp_path_factory):
    """`ssl-jax demo` in a fresh process, on CPU, with an empty Hugging Face cache (so every
    model runs on the same random weights as the recording)."""
    root = tmp_path_factory.mktemp("demo")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "XLA_"))}
    env.update(HF_HOME=str(root / "hf"), HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-m", "ssl_jax.cli", "demo", "--out", str(root / "demo"),
                        "--no-progress"], cwd=root, env=env, capture_output=True, text=True,
                       timeout=1800)
    assert r.returncode == 0, r.stdout + r.stderr
    return root / "demo"


@pytest.mark.slow
@pytest.mark.subprocess
def test_demo_ran_every_model_on_random_weights(demo_results):
    manifest = json.loads((demo_results / "cache" / "extract_manifest.json").read_text())
    assert sorted(manifest["random_weight_models"]) == sorted(MODELS)


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("name", TABLES)
def test_demo_table_equals_the_recording(demo_results, name):
    current = read_table(demo_results / "results" / name)
    recorded = read_table(RECORDED / f"{name}.gz")
    assert table_differences(recorded, current) == []
