"""The example scripts run end to end on the embedded sample (random weights)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _run(*args: str) -> str:
    r = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_alignment_one_model():
    out = _run(str(SCRIPTS / "alignment_one_model.py"), "--model", "clip", "--random-weights",
               "--layers", "2")
    rows = re.findall(r"layer\s+(\d+)\s+([0-9.]+)\s+\[([0-9.]+), ([0-9.]+)\]", out)
    assert len(rows) == 4  # 2 layers × (IoU@90, coverage)
    for _, m, lo, hi in rows:
        assert 0 <= float(lo) <= float(m) <= float(hi) <= 1


def test_rank_heads():
    out = _run(str(SCRIPTS / "rank_heads.py"), "--model", "siglip2", "--random-weights")
    heads = [int(h) for h in re.findall(r"head\s+(\d+)\s+IoU@90", out)]
    assert sorted(heads) == list(range(12))
    ious = [float(v) for v in re.findall(r"IoU@90 ([0-9.]+)", out)]
    assert ious == sorted(ious, reverse=True)
