"""Shared benchmark plumbing: machine description, interleaved timing, result files."""

from __future__ import annotations

import csv
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def results_dir() -> Path:
    """benchmarks/results, or $SSL_JAX_BENCH_RESULTS (the smoke test writes to a temp dir)."""
    return Path(os.environ.get("SSL_JAX_BENCH_RESULTS") or RESULTS)


def machine_info() -> dict[str, Any]:
    from ssl_jax.io.manifest import machine, versions

    info = machine()
    info["versions"] = versions()
    if hasattr(os, "getloadavg"):  # other work on the machine skews every ratio: record it
        info["load_average_1_5_15min"] = [round(x, 2) for x in os.getloadavg()]
    try:
        import torch

        info["versions"]["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Run every fn once per round, `repeats` rounds, so load drifts hit all alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def print_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    sys.stdout.flush()


def write_results(name: str, rows: list[dict[str, Any]], meta: dict[str, Any],
                  out_dir: Path | None = None) -> tuple[Path, Path]:
    """benchmarks/results/<name>.json (rows + machine) and <name>.csv (timm-style flat rows)."""
    out_dir = out_dir or results_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "machine": machine_info(), **meta, "rows": rows}
    json_path = out_dir / f"{name}.json"
    json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    csv_path = out_dir / f"{name}.csv"
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    with csv_path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    return json_path, csv_path
