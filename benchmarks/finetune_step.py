"""Fine-tuning train-step time: ssl_jax (jitted optax step, data-parallel over local devices)
against an equivalent PyTorch step (transformers encoder + nn.Linear head, class-weighted
CrossEntropyLoss, clip_grad_norm_, AdamW + warmup-cosine LambdaLR; LoRA as explicit q/v
adapters with dropout), same weights, same machine, interleaved repeats (medians).

Both sides get normalised float pixels' equivalent and no augmentation (ssl_jax normalises
uint8 inside the step; torch receives float pixels), so the numbers compare the model step.

    python -m benchmarks.finetune_step                    # ViT-B (dinov2) at 224, batch 16
    python -m benchmarks.finetune_step --model clip --repeats 7
    python -m benchmarks.finetune_step --tiny             # seconds: 2-layer width-64 smoke run
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import jax
import numpy as np

from benchmarks.common import interleaved, median, print_table, write_results


def torch_model(alias: str, tiny: bool):
    if tiny:
        from tests.support.finetune import tiny_hf_model

        return tiny_hf_model(alias, seed=0)
    from tests.support import hf_reference as ref

    return ref.build(alias, seed=0)


def ours_from_torch(tm, alias: str):
    import ssl_jax

    folder = Path("/tmp") / f"ssl_jax_bench_finetune_{alias}_{id(tm)}"
    tm.save_pretrained(folder)
    return ssl_jax.load_model(folder)


def torch_step_fn(tm, alias: str, strategy: str, pixels, labels, weights, lr, total, lora_cfg):
    import torch

    tm = tm.train()
    dim = tm.config.hidden_size
    head = torch.nn.Linear(dim, 4)
    for p in tm.parameters():
        p.requires_grad_(strategy == "full")
    groups = [{"params": list(head.parameters()), "lr": 1e-3}]
    if strategy == "lora":
        class LoraLinear(torch.nn.Module):
            def __init__(self, base):
                super().__init__()
                self.base = base
                self.A = torch.nn.Parameter(torch.empty(lora_cfg.rank, base.in_features))
                torch.nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
                self.B = torch.nn.Parameter(torch.zeros(base.out_features, lora_cfg.rank))
                self.drop = torch.nn.Dropout(lora_cfg.dropout)

            def forward(self, x):
                return self.base(x) + lora_cfg.scale * (self.drop(x) @ self.A.T @ self.B.T)

        adapters = []
        for name, mod in list(tm.named_modules()):
            for child in ("q_proj", "v_proj"):
                if hasattr(mod, child) and isinstance(getattr(mod, child), torch.nn.Linear) \
                        and not name.startswith("head"):
                    wrapped = LoraLinear(getattr(mod, child))
                    setattr(mod, child, wrapped)
                    adapters += [wrapped.A, wrapped.B]
        groups.append({"params": adapters, "lr": lr})
    elif strategy == "full":
        groups.append({"params": list(tm.parameters()), "lr": lr})
    opt = torch.optim.AdamW(groups, weight_decay=0.01)
    warm = int(0.1 * total)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: s / max(1, warm) if s < warm else
        0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm))))
    ce = torch.nn.CrossEntropyLoss(weight=torch.from_numpy(weights))
    x = torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)))
    y = torch.from_numpy(labels.astype(np.int64))
    params = [p for g in groups for p in g["params"]]
    siglip = alias == "siglip2"

    def step():
        opt.zero_grad(set_to_none=True)
        out = tm(pixel_values=x)
        feats = out.pooler_output if siglip else out.last_hidden_state[:, 0]
        loss = ce(head(feats), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        return float(loss.detach())

    return step


def ours_step_fn(model, strategy: str, images_u8, labels, weights, lr, total, lora_cfg):
    from ssl_jax.train import FinetuneConfig
    from ssl_jax.workflows.finetune import Trainer, initial_trainable

    cfg = FinetuneConfig(strategy=strategy, batch_size=len(labels), lr_backbone=lr,
                         augment=False, lora=lora_cfg)
    training = {**cfg.record(), "total_steps": total}
    tr = Trainer(model.spec, cfg, training, 4, images_u8.shape[1:3], weights)
    state = tr.place(tr.init_state(initial_trainable(model.spec, model.params, strategy, 4,
                                                     tr.lora, jax.random.key(0))))
    frozen = tr.place(model.params if strategy != "full" else {})
    mask = np.ones(len(labels), np.float32)
    key = jax.random.key(1)
    box = {"state": state}

    def step():
        box["state"], m = tr.train_step(box["state"], frozen, images_u8, labels, mask, key)
        return float(m["loss"])  # blocks until done

    return step


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="dinov2", choices=["dinov2", "dinov3", "mae", "clip",
                                                          "siglip2"])
    ap.add_argument("--strategies", default="full,lora")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tiny", action="store_true", help="2-layer width-64 model, batch 4, 28 px")
    ap.add_argument("--out", default=None, help="Results name (default finetune_step[_tiny]).")
    ap.add_argument("--torch-threads", type=int, default=None,
                    help="torch intra-op threads (default: torch's own choice)")
    args = ap.parse_args(argv)
    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)

    from ssl_jax.train import LoraConfig, class_weights

    if args.tiny:
        args.batch, args.size = 4, (28 if args.model == "dinov2" else 32)
    name = args.out or ("finetune_step_tiny" if args.tiny else "finetune_step")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.batch, args.size, args.size, 3), dtype=np.uint8)
    labels = (np.arange(args.batch) % 4).astype(np.int32)
    weights = class_weights(np.repeat(np.arange(4), [1214, 1216, 137, 1104]), 4)
    lora_cfg = LoraConfig()  # r 8, alpha 32, dropout 0.1, q and v
    total = 690
    rows, compile_s, times, wall = [], {}, {}, 0.0
    # one strategy at a time (both implementations held together, interleaved), freeing
    # memory in between: a ViT-B full step at batch 16 needs several GB per implementation
    for strategy in args.strategies.split(","):
        lr = 1e-4 if strategy == "lora" else 1e-5
        tm = torch_model(args.model, args.tiny)
        model = ours_from_torch(tm, args.model)
        p = model.spec.preprocessing
        pixels = ((images.astype(np.float32) / 255 - np.asarray(p.mean, np.float32))
                  / np.asarray(p.std, np.float32))
        fns = {f"ssl_jax {strategy}": ours_step_fn(model, strategy, images, labels, weights,
                                                   lr, total, lora_cfg),
               f"torch {strategy}": torch_step_fn(tm, args.model, strategy, pixels, labels,
                                                  weights, lr, total, lora_cfg)}
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            compile_s[k] = time.perf_counter() - t0
            print(f"{k}: first step {compile_s[k]:.2f} s", flush=True)
        t0 = time.perf_counter()
        got = interleaved(fns, args.repeats)
        wall += time.perf_counter() - t0
        times.update(got)
        print({k: [round(x, 3) for x in v] for k, v in got.items()}, flush=True)
        del fns, tm, model
        import gc

        gc.collect()
        jax.clear_caches()
        o, t = median(times[f"ssl_jax {strategy}"]), median(times[f"torch {strategy}"])
        for impl, v in (("ssl_jax", o), ("torch", t)):
            rows.append({"model": args.model, "strategy": strategy, "impl": impl,
                         "batch": args.batch, "size": args.size,
                         "median_step_s": v, "images_per_s": args.batch / v,
                         "min_step_s": min(times[f"{impl} {strategy}"]),
                         "first_step_s (jax: compile)": compile_s[f"{impl} {strategy}"],
                         "speedup_vs_torch": t / o if impl == "ssl_jax" else 1.0})
    print_table(rows, ["model", "strategy", "impl", "batch", "size", "median_step_s",
                       "images_per_s", "speedup_vs_torch", "first_step_s (jax: compile)"])
    meta = {"repeats": args.repeats, "interleaved_wall_s": wall, "tiny": args.tiny,
            "jax_devices": [str(d) for d in jax.devices()],
            "torch_threads": torch.get_num_threads(),
            "note": "no augmentation on either side; LoRA r=8 alpha=32 dropout=0.1 on q,v; "
                    "AdamW, warmup-cosine, clip 1.0, class-weighted CE; float32",
            "raw_times_s": times}
    js, _ = write_results(name, rows, meta)
    print(f"wrote {js}")


if __name__ == "__main__":
    main()
