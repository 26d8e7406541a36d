"""Every benchmark runs in its --tiny mode and writes a result file with machine information
and rows (timings are not asserted: benchmarks measure, tests check they run)."""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py")
                    if p.stem not in ("__init__", "common"))


def test_every_benchmark_is_listed():
    assert {"forward", "attention_memory", "metrics_grid", "bootstrap", "finetune_step",
            "demo"} <= set(BENCHMARKS)


FAST = {"bootstrap"}  # the other tiny modes take 7-110 s of CPU (forward: 110)
SUBPROCESS = {"demo"}  # runs `ssl-jax demo` in a fresh process


def _marks(name: str) -> list:
    return ([] if name in FAST else [pytest.mark.slow]) + (
        [pytest.mark.subprocess] if name in SUBPROCESS else [])


@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n)) for n in BENCHMARKS])
def test_benchmark_tiny_mode(name, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SSL_JAX_BENCH_RESULTS", str(tmp_path))
    module = importlib.import_module(f"benchmarks.{name}")
    module.main(["--tiny"])
    printed = capsys.readouterr().out
    written = sorted(tmp_path.glob("*.json"))
    assert [p.name for p in written] == [f"{name}_tiny.json"], printed
    assert (tmp_path / f"{name}_tiny.csv").exists()
    payload = json.loads(written[0].read_text())
    assert payload["machine"]["versions"]["jax"] and payload["rows"]
    numbers = [v for row in payload["rows"] for v in row.values() if isinstance(v, float)]
    # NaN marks "not applicable" (e.g. compile time of a torch row); infinities are bugs
    assert not any(math.isinf(v) for v in numbers)
    assert sum(math.isfinite(v) and v > 0 for v in numbers) >= len(payload["rows"])
    assert "wrote" in printed
