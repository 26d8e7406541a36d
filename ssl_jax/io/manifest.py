"""Run manifests: what produced a result (versions, config, weights, device, seeds, timings)."""

from __future__ import annotations

import datetime as _dt
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import jax

from ssl_jax.io.store import write_json_atomic

RANDOM_WEIGHTS_STAMP = "random weights — not a scientific result"

_PACKAGES = ("ssl-jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tensorstore",
             "numpy", "scipy", "transformers", "safetensors")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "jax_backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
    }


def write_manifest(path: str | Path, *, command: str, config: dict[str, Any],
                   weights: dict[str, dict[str, Any]], seeds: dict[str, int],
                   timings: dict[str, float], extra: dict[str, Any] | None = None) -> dict:
    random_weights = any(w.get("random") for w in weights.values())
    manifest = {
        "command": command,
        "finished": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "versions": versions(),
        "machine": machine(),
        "config": config,
        "weights": weights,
        "seeds": seeds,
        "timings_s": {k: round(float(v), 3) for k, v in timings.items()},
        "random_weights": random_weights,
    }
    if random_weights:
        manifest["warning"] = RANDOM_WEIGHTS_STAMP
    if extra:
        manifest.update(extra)
    write_json_atomic(Path(path), manifest)
    return manifest
