"""`ssl-jax visualize`: activation maximisation of one unit/channel/SAE feature/head."""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np


@click.command("visualize")
@click.option("--model", "source", default="dinov2", show_default=True)
@click.option("--kind", type=click.Choice(["channel", "unit", "sae", "pooled", "head"]),
              default="channel", show_default=True)
@click.option("--index", default=0, show_default=True, help="Channel / feature / head index.")
@click.option("--layer", default=-1, show_default=True)
@click.option("--token", default=0, show_default=True, help="Token index (kind=unit).")
@click.option("--sae", "sae_path", type=click.Path(exists=True), default=None,
              help="SAE file (kind=sae; its layer is used).")
@click.option("--size", default=112, show_default=True)
@click.option("--steps", default=128, show_default=True)
@click.option("--lr", default=0.05, show_default=True)
@click.option("--negative", is_flag=True, help="Minimise instead of maximise.")
@click.option("--seed", default=0, show_default=True)
@click.option("--allow-random-weights", is_flag=True)
@click.option("--out", "out_path", type=click.Path(), default="visualize.png", show_default=True)
def visualize(source, kind, index, layer, token, sae_path, size, steps, lr, negative, seed,
              allow_random_weights, out_path):
    """Optimise an image that maximises (or minimises) one target of SOURCE; writes a PNG."""
    import jax
    from PIL import Image

    from ssl_jax.cli.sae import load_encoder
    from ssl_jax.featvis.core import Objective, VisConfig
    from ssl_jax.featvis.core import visualize as run

    t0 = time.time()
    model, _ = load_encoder(source, allow_random_weights)
    sae = None
    if kind == "sae":
        if sae_path is None:
            raise click.UsageError("--kind sae needs --sae FILE")
        from ssl_jax.io.sae_files import load_sae

        sae = load_sae(sae_path)
        layer = int(sae.meta.get("layer", layer))
    p = model.spec.patch_size
    side = max(p, size // p * p)
    obj = Objective(kind, index, layer=layer, token=token, sae=sae)
    cfg = VisConfig(size=(side, side), steps=steps, lr=lr, sign=-1.0 if negative else 1.0,
                    jitter=max(1, side // 28))
    res = run(model, obj, jax.random.key(seed), cfg)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.clip(res.image, 0, 1) * 255).astype(np.uint8)).save(out)
    click.echo(f"{kind} {index} layer {layer}: {res.start:.4g} -> {res.final:.4g} "
               f"({'min' if negative else 'max'}imised, {steps} steps, {time.time() - t0:.1f} s); "
               f"wrote {out}")
