"""Peak memory of the forward pass by attention mode: "none", "cls", "rollout", "full".

    python -m benchmarks.attention_memory                 # ViT-B DINOv2-reg, 224, batch 8, 64
    python -m benchmarks.attention_memory --model mae --batches 32 --no-rss --gradients

Two measurements per mode, both with the 12-layer real architecture and random weights:
- XLA: the compiled forward's `memory_analysis()`: temporaries + outputs (the arguments,
  params and pixels, are the same for every mode and reported once).
- RSS (CPU) / device peak (GPU): one child process per mode compiles the public
  `ssl_jax.forward` with a warm-up call, then runs it once more while a thread samples
  the resident set every millisecond; reported is the peak above the resident set just
  before that call (the output that the caller keeps included). The children run with
  MALLOC_MMAP_THRESHOLD_ so that glibc hands large freed blocks back to the kernel and the
  resident set follows live memory. On a GPU the device's peak_bytes_in_use (minus the
  parameters and pixels) is reported instead.
Writes benchmarks/results/attention_memory.json and prints a table.

Reading the numbers: the attention outputs differ by 261× (cls) and 3132× (rollout) against
"full"; the whole forward's peak differs less (8.6× XLA, 6.1× RSS at batch 8 after the
layers moved under `lax.scan`), because every mode also holds one layer's activations
(the 2088×3072 MLP hidden alone is 25 MB at batch 8). Before the scan, slicing layer i
out of the stacked params in an unrolled loop made XLA:CPU copy all twelve layers'
weights up front (~330 MB of temporaries in every mode, batch 1 included).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks.common import print_table, write_results

MODES = ("none", "cls", "rollout", "full")
MB = 1024.0**2


def _setup(alias: str, batch: int, size: int):
    import jax.numpy as jnp
    import numpy as np

    import ssl_jax

    model = ssl_jax.random_model(alias)
    pixels = jnp.asarray(np.random.default_rng(0).normal(size=(batch, size, size, 3)),
                         jnp.float32)
    return model, pixels


def _forward_args(model, mode: str):
    """The static arguments `ssl_jax.forward` passes to the jitted forward for `mode`."""
    from ssl_jax.models.collectors import attention_collectors

    n = model.spec.num_layers
    return dict(spec=model.spec, collect=attention_collectors(model.spec, mode, tuple(range(n))),
                dtype=model.dtype)


def xla_memory(alias: str, batch: int, size: int) -> dict[str, dict[str, float]]:
    from ssl_jax.models.model import _forward

    model, pixels = _setup(alias, batch, size)
    out = {}
    for mode in MODES:
        t0 = time.perf_counter()
        compiled = _forward.lower(model.params, pixels, **_forward_args(model, mode)).compile()
        ma = compiled.memory_analysis()
        out[mode] = {
            "xla_temp_mb": ma.temp_size_in_bytes / MB,
            "xla_output_mb": ma.output_size_in_bytes / MB,
            "xla_argument_mb": ma.argument_size_in_bytes / MB,
            "xla_peak_mb": (ma.temp_size_in_bytes + ma.output_size_in_bytes) / MB,
            "compile_s": time.perf_counter() - t0,
        }
    return out


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(alias: str, batch: int, size: int, mode: str) -> dict[str, float]:
    """Runs in its own process: peak memory of one `ssl_jax.forward` call in `mode`."""
    import jax

    import ssl_jax

    model, pixels = _setup(alias, batch, size)
    run = lambda: jax.block_until_ready(ssl_jax.forward(model, pixels, attentions=mode))  # noqa: E731
    out = run()  # compile + warm up
    del out
    gc.collect()
    time.sleep(1.0)  # buffers are released asynchronously
    device = jax.devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats is not None:
        args = sum(a.nbytes for a in jax.tree.leaves(model.params)) + pixels.nbytes
        t0 = time.perf_counter()
        out = run()
        seconds = time.perf_counter() - t0
        peak = device.memory_stats()["peak_bytes_in_use"] - args
        del out
        return {"device_peak_mb": peak / MB, "run_s": seconds}
    base, peak, stop = _rss_bytes(), [0], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.001)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    out = run()
    seconds = time.perf_counter() - t0
    time.sleep(0.01)
    stop.set()
    thread.join()
    peak[0] = max(peak[0], _rss_bytes())
    del out  # held (as a caller would) until the last sample
    return {"rss_peak_mb": (peak[0] - base) / MB, "run_s": seconds}


def rss_memory(alias: str, batch: int, size: int) -> dict[str, dict[str, float]]:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="65536")
    root = Path(__file__).resolve().parents[1]
    out = {}
    for mode in MODES:
        cmd = [sys.executable, "-m", "benchmarks.attention_memory", "--child", mode,
               "--model", alias, "--batch", str(batch), "--size", str(size)]
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"child for mode {mode!r} failed:\n{proc.stderr[-3000:]}")
        out[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def expected_mb(alias: str, batch: int, size: int) -> dict[str, float]:
    """Bytes of the attention outputs alone, from the shapes."""
    from ssl_jax.models.config import bundled_spec

    spec = bundled_spec(alias)
    t, n, h = spec.layout(size, size).num_tokens, spec.num_layers, spec.num_heads
    return {"full": batch * n * h * t * t * 4 / MB, "cls": batch * n * h * t * 4 / MB,
            "rollout": batch * n * t * 4 / MB, "none": 0.0}


def gradient_memory(alias: str, batch: int, size: int) -> list[dict]:
    """XLA's compiled estimate for the gradient attributions (one backward per image)."""
    import jax

    from ssl_jax.attention import gradients as g

    model, pixels = _setup(alias, batch, size)
    common = dict(spec=model.spec, dtype=model.dtype, target=None)
    jobs = {
        "grad_cam": lambda: g._grad_cam.lower(model.params, None, pixels, None,
                                              state=model.spec.num_layers - 1, relu=True,
                                              **common),
        "attention_gradient": lambda: g._attention_gradient.lower(
            model.params, None, pixels, None, start_layer=0, **common),
        "gradient_saliency": lambda: g._saliency.lower(model.params, None, pixels, None,
                                                       **common),
    }
    rows = []
    for name, lower in jobs.items():
        t0 = time.perf_counter()
        ma = lower().compile().memory_analysis()
        rows.append({"batch": batch, "mode": name, "xla_temp_mb": ma.temp_size_in_bytes / MB,
                     "xla_output_mb": ma.output_size_in_bytes / MB,
                     "xla_peak_mb": (ma.temp_size_in_bytes + ma.output_size_in_bytes) / MB,
                     "compile_s": time.perf_counter() - t0})
        jax.clear_caches()
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="dinov2")
    ap.add_argument("--batches", type=int, nargs="+", default=[8, 64],
                    help="XLA estimates for each; the RSS measurement for the first only")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--no-rss", action="store_true", help="XLA's compiled estimate only")
    ap.add_argument("--gradients", action="store_true",
                    help="also XLA's estimate for grad_cam / attention_gradient / saliency")
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=8, help=argparse.SUPPRESS)  # for --child
    ap.add_argument("--tiny", action="store_true",
                    help="smoke test: batch 2 at 56 px, XLA estimates only")
    ap.add_argument("--name", default=None, help="result name (default attention_memory[_tiny])")
    args = ap.parse_args(argv)
    if args.tiny:
        args.batches, args.size, args.no_rss = [2], 56, True
    if args.child:
        print(json.dumps(child(args.model, args.batch, args.size, args.child)))
        return {}

    import jax

    rows = []
    for i, batch in enumerate(args.batches):
        xla = xla_memory(args.model, batch, args.size)
        measured = {} if args.no_rss or i else rss_memory(args.model, batch, args.size)
        shapes = expected_mb(args.model, batch, args.size)
        block = [{"batch": batch, "mode": mode, "attention_output_mb": shapes[mode],
                  **xla[mode], **measured.get(mode, {})} for mode in MODES]
        full = block[-1]
        for r in block:
            if r["mode"] != "none":
                r["attention_full_over_this"] = shapes["full"] / shapes[r["mode"]]
            for key in ("xla_peak_mb", "rss_peak_mb"):
                if key in full:
                    r[key.replace("_mb", "_full_over_this")] = full[key] / max(r[key], 1e-9)
        rows += block
        jax.clear_caches()
    grads = gradient_memory(args.model, args.batches[0], args.size) if args.gradients else []

    print(f"{args.model} ({bundled_layers(args.model)}-layer), {args.size}x{args.size}, "
          f"{jax.devices()[0].platform}; arguments (params + pixels) are not counted")
    columns = ["batch", "mode", "attention_output_mb", "attention_full_over_this",
               "xla_temp_mb", "xla_output_mb", "xla_peak_mb", "xla_peak_full_over_this"]
    if any("rss_peak_mb" in r for r in rows):
        columns += ["rss_peak_mb", "rss_peak_full_over_this", "run_s"]
    print_table(rows, columns)
    if grads:
        print()
        print_table(grads, ["batch", "mode", "xla_temp_mb", "xla_output_mb", "xla_peak_mb"])
    result = {"model": args.model, "size": args.size, "platform": jax.devices()[0].platform,
              "device": str(jax.devices()[0]), "gradients": grads}
    name = args.name or ("attention_memory_tiny" if args.tiny else "attention_memory")
    paths = write_results(name, rows, result)
    print("wrote", *paths)
    return {**result, "rows": rows}


def bundled_layers(alias: str) -> int:
    from ssl_jax.models.config import bundled_spec

    return bundled_spec(alias).num_layers


if __name__ == "__main__":
    main()
