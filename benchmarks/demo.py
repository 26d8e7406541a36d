"""End-to-end `ssl-jax demo`: the whole study (extract → evaluate → compare → report) on the
embedded sample dataset, in a fresh process as a user runs it (imports and compilation
included), then rerun on the finished folder (cache hits).

For scale, the same run times the reference path's extraction alone: transformers eager
with output_attentions=True over the same images × models, one image per forward as the
original study extracted maps (no metrics, no report). The ratio says how much of the
reference's extraction time our complete study costs.

    python -m benchmarks.demo            # five ViT-B models, 21 annotated sample images
    python -m benchmarks.demo --tiny     # seconds: one model at 56 px, few resamples
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import print_table, write_results

TINY_CONFIG = """[study]
name = "tiny"
dataset = "sample"
models = ["dinov2"]
methods = ["cls", "mean"]
input_size = 56
heatmap_size = 56
n_bootstrap = 200
n_random_trials = 2
"""


def run_demo(out: Path, models: list[str], config: Path | None) -> tuple[float, dict, str]:
    cmd = [sys.executable, "-m", "ssl_jax.cli", "demo", "--out", str(out), "--no-progress"]
    if config is not None:
        cmd += ["--config", str(config)]
    for m in models:
        cmd += ["--models", m]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"ssl-jax demo failed:\n{proc.stdout}\n{proc.stderr}")
    m = re.search(r"in ([\d.]+)s \(([^)]*)\)", proc.stdout)
    stages = {k: float(v) for k, v in re.findall(r"(\w+) ([\d.]+)s", m.group(2))} if m else {}
    return wall, stages, proc.stdout


def reference_extraction(models: list[str], size: int, num_images: int) -> float:
    """Seconds for transformers eager + attentions, batch 1, over num_images × models."""
    import numpy as np
    import torch

    from tests.support import hf_reference as ref

    total = 0.0
    x = torch.from_numpy(np.random.default_rng(0).normal(
        size=(1, 3, size, size)).astype(np.float32))
    for alias in models:
        hf = ref.build(alias, seed=0)
        kw = {"interpolate_pos_encoding": True} if size != 224 and alias != "dinov2" else {}
        with torch.no_grad():
            hf(pixel_values=x, output_attentions=True, **kw)  # warm-up
            t0 = time.perf_counter()
            for _ in range(num_images):
                hf(pixel_values=x, output_attentions=True, **kw)
            total += time.perf_counter() - t0
    return total


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["dinov2", "dinov3", "mae", "clip", "siglip2"])
    ap.add_argument("--tiny", action="store_true", help="one model at 56 px: smoke test")
    ap.add_argument("--name", default=None)
    args = ap.parse_args(argv)
    from ssl_jax.workflows.study.dataset import study_images

    num_images = len(study_images("sample")[0])
    models = ["dinov2"] if args.tiny else args.models
    size = 56 if args.tiny else 224
    with tempfile.TemporaryDirectory() as tmp:
        config = None
        if args.tiny:
            config = Path(tmp) / "tiny.toml"
            config.write_text(TINY_CONFIG)
        out = Path(tmp) / "demo"
        cold, stages, text = run_demo(out, models, config)
        warm, warm_stages, _ = run_demo(out, models, config)
    ref_s = reference_extraction(models, size, num_images)
    rows = [{"run": "ssl_jax demo (fresh process, empty folder)", "seconds": cold, **stages,
             "vs_reference_extraction": ref_s / cold},
            {"run": "ssl_jax demo rerun (finished folder)", "seconds": warm, **warm_stages,
             "vs_reference_extraction": ref_s / warm},
            {"run": "transformers eager+attn extraction only, batch 1", "seconds": ref_s,
             "vs_reference_extraction": 1.0}]
    print(text)
    print_table(rows, ["run", "seconds", "extract", "evaluate", "compare", "report",
                       "vs_reference_extraction"])
    name = args.name or ("demo_tiny" if args.tiny else "demo")
    paths = write_results(name, rows, {"models": models, "images": num_images, "size": size})
    print("wrote", *paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
