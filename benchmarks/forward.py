"""Forward throughput: ssl_jax (attentions none / cls / full / rollout) against transformers
eager with output_attentions=True (the reference path) and transformers sdpa without
attentions, same weights, same machine, interleaved repeats.

    python -m benchmarks.forward                      # all five models, batch 1, 8, 32
    python -m benchmarks.forward --models dinov2 --batches 8 --repeats 7
    python -m benchmarks.forward --tiny               # seconds: 2-layer models, smoke test

Reports images/s, the ratio to transformers eager+attentions, compile time (separately),
achieved GFLOP/s (analytic matmul FLOPs; XLA's cost analysis counts a scanned layer once), the fraction of this
machine's measured float32 matmul peak, and XLA's peak memory estimate (arguments +
outputs + temporaries of the compiled executable).
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import interleaved, median, print_table, write_results

MODES = ("none", "cls", "full", "rollout")


def matmul_peak(n: int = 2048, repeats: int = 5, dtype: str = "float32") -> dict[str, float]:
    """GFLOP/s of one n×n×n matmul in XLA and in torch (the machine's practical peak)."""
    import torch

    a = np.random.default_rng(0).normal(size=(n, n)).astype(np.float32)
    ja = jnp.asarray(a, dtype=jnp.dtype(dtype))
    f = jax.jit(lambda x: x @ x)
    f(ja).block_until_ready()
    ta = torch.from_numpy(a).to(getattr(torch, dtype))
    torch.mm(ta, ta)
    t = interleaved({"xla": lambda: f(ja).block_until_ready(), "torch": lambda: torch.mm(ta, ta)},
                    repeats)
    flops = 2.0 * n**3
    return {k: flops / median(v) / 1e9 for k, v in t.items()}


def torch_models(alias: str, num_layers: int | None):
    from tests.support import hf_reference as ref

    eager = ref.build(alias, seed=0, num_layers=num_layers)
    sdpa = ref.build(alias, seed=0, num_layers=num_layers)
    sdpa.load_state_dict(eager.state_dict())
    sdpa.set_attn_implementation("sdpa")
    return eager, sdpa


def ours_from_torch(alias: str, eager, num_layers: int | None):
    import ssl_jax
    from ssl_jax.models.config import bundled_spec
    from ssl_jax.models.convert import convert_state_dict

    spec = bundled_spec(alias)
    if num_layers is not None:
        spec = spec.replace(num_layers=num_layers)
    tensors = {k: v.detach().numpy() for k, v in eager.state_dict().items()}
    params = convert_state_dict(spec, tensors, where=f"torch {alias}")
    return ssl_jax.Model(params=jax.tree.map(jnp.asarray, params), spec=spec,
                         source=f"bench:{alias}")


def compiled_forward(model, pixels, mode: str, dtype):
    """(compiled executable, compile seconds) for ssl_jax's forward in `mode`."""
    from ssl_jax.models.collectors import attention_collectors
    from ssl_jax.models.model import _forward

    layers = tuple(range(model.spec.num_layers))
    kw = dict(spec=model.spec, collect=attention_collectors(model.spec, mode, layers),
              dtype=dtype)
    t0 = time.perf_counter()
    exe = _forward.lower(model.params, pixels, **kw).compile()
    return exe, time.perf_counter() - t0


def forward_flops(spec, batch: int, size: int) -> float:
    """Multiply-add FLOPs (×2) of one forward: XLA's cost analysis counts a scanned layer
    body once, so the count is analytic (matmuls only; softmax/norms are < 1%)."""
    lay = spec.layout(size, size)
    t, d, m, n = lay.num_tokens, spec.hidden_size, spec.mlp_dim, spec.num_layers
    per_layer = 2 * t * d * 3 * d + 2 * 2 * t * t * d + 2 * t * d * d + 2 * 2 * t * d * m
    embed = 2 * lay.num_patches * spec.num_channels * spec.patch_size**2 * d
    head = 2 * 2 * t * d * d + 2 * 2 * d * m if spec.pooler == "map" else 0
    return float(batch * (n * per_layer + embed + head))


def _cost(exe) -> float:
    mem = exe.memory_analysis()
    peak = float("nan")
    if mem is not None:
        peak = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
                - getattr(mem, "alias_size_in_bytes", 0))
    return peak


def bench_batch(alias: str, model, eager, sdpa, b: int, size: int, repeats: int,
                peak_gflops: float, dtype: str = "float32") -> list[dict]:
    import torch

    import ssl_jax

    x = np.random.default_rng(b).normal(size=(b, size, size, 3)).astype(np.float32)
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(getattr(torch, dtype))
    jdtype = jnp.dtype(dtype)
    kw: dict = {}
    if size != 224 and alias in ("mae", "clip", "siglip2"):
        kw["interpolate_pos_encoding"] = True
    if alias == "mae":
        n = (size // model.spec.patch_size) ** 2
        kw["noise"] = torch.arange(n, dtype=torch.float32).expand(b, -1)
    jx = jnp.asarray(x)
    fns, info = {}, {}
    for mode in MODES:
        if mode == "rollout" and not model.spec.has_cls:
            continue
        exe, compile_s = compiled_forward(model, jx, mode, jdtype)
        flops, mem = forward_flops(model.spec, b, size), _cost(exe)
        # timed through the public API (includes stacking the per-layer attentions)
        fns[f"ssl_jax/{mode}"] = (
            lambda m=mode: jax.block_until_ready(ssl_jax.forward(model, jx, attentions=m,
                                                                 dtype=jdtype)))
        info[f"ssl_jax/{mode}"] = dict(compile_s=compile_s, gflop=flops / 1e9,
                                       peak_mem_mb=mem / 2**20)

    def run_eager():
        with torch.no_grad():
            eager(pixel_values=xt, output_attentions=True, **kw)

    def run_sdpa():
        with torch.no_grad():
            sdpa(pixel_values=xt, **kw)

    fns["transformers/eager+attn"] = run_eager
    fns["transformers/sdpa"] = run_sdpa
    for fn in fns.values():  # warm-up (first jax call also traces `forward`)
        fn()
    times = interleaved(fns, repeats)
    ref_t = median(times["transformers/eager+attn"])
    rows = []
    for name, ts in times.items():
        t = median(ts)
        row = {"model": alias, "batch": b, "dtype": dtype, "impl": name, "img_per_s": b / t,
               "ms_per_batch": 1e3 * t, "vs_eager_attn": ref_t / t, "min_ms": 1e3 * min(ts),
               "repeats": len(ts)}
        if name in info:
            i = info[name]
            row.update(compile_s=i["compile_s"], gflop_per_s=i["gflop"] / t,
                       frac_peak=i["gflop"] / t / peak_gflops, peak_mem_mb=i["peak_mem_mb"])
        rows.append(row)
    print_table(rows, ["model", "batch", "impl", "img_per_s", "vs_eager_attn", "compile_s",
                       "gflop_per_s", "frac_peak", "peak_mem_mb"])
    print()
    return rows


def bench_model(alias: str, batches, repeats: int, num_layers: int | None, size: int,
                peak_gflops: float, dtype: str = "float32") -> list[dict]:
    import torch

    eager, sdpa = torch_models(alias, num_layers)
    model = ours_from_torch(alias, eager, num_layers)
    size = size // model.spec.patch_size * model.spec.patch_size  # 224 for every model
    rows = []
    # parameters stay float32 in ssl_jax (dtype is the compute dtype); torch casts its module
    eager, sdpa = eager.to(getattr(torch, dtype)), sdpa.to(getattr(torch, dtype))
    for b in batches:
        rows += bench_batch(alias, model, eager, sdpa, b, size, repeats, peak_gflops, dtype)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["dinov2", "dinov3", "mae", "clip", "siglip2"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tiny", action="store_true", help="2-layer models, 64 px, batch 2: smoke")
    ap.add_argument("--name", default=None, help="result file name (default forward[_tiny])")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                    help="compute dtype of both sides (CPU bf16 needs AVX512-BF16/AMX to pay)")
    ap.add_argument("--peak-only", action="store_true",
                    help="only the n×n matmul rate of XLA and torch in float32 and bfloat16")
    args = ap.parse_args(argv)
    jax.config.update("jax_default_matmul_precision", "highest")
    if args.peak_only:
        n = 256 if args.tiny else 1024  # torch's bf16 GEMM can run at ~1% of float32 on CPU
        rows = [{"dtype": dt, "n": n, **{f"{k}_gflop_per_s": v for k, v in
                                         matmul_peak(n, repeats=args.repeats, dtype=dt).items()}}
                for dt in ("float32", "bfloat16")]
        print_table(rows, list(rows[0]))
        paths = write_results(args.name or "matmul_peak" + ("_tiny" if args.tiny else ""), rows,
                              {"repeats": args.repeats})
        print("wrote", *paths)
        return 0
    num_layers, size = (2, 64) if args.tiny else (None, 224)
    batches = [2] if args.tiny else args.batches
    repeats = 2 if args.tiny else args.repeats
    peak = matmul_peak(512 if args.tiny else 2048, repeats=repeats, dtype=args.dtype)
    print(f"{args.dtype} matmul peak: XLA {peak['xla']:.0f} GFLOP/s, torch {peak['torch']:.0f} "
          f"GFLOP/s\n")
    machine_peak = max(peak.values())
    rows = []
    for alias in args.models:
        rows += bench_model(alias, batches, repeats, num_layers, size, machine_peak, args.dtype)
    suffix = "" if args.dtype == "float32" else f"_{args.dtype}"
    name = args.name or ("forward_tiny" if args.tiny else "forward") + suffix
    paths = write_results(name, rows, {"matmul_peak_gflop_per_s": peak, "size": size,
                                       "dtype": args.dtype,
                                       "num_layers": num_layers or "all", "repeats": repeats})
    print("wrote", *paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
