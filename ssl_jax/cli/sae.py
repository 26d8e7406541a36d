"""`ssl-jax sae train|features|score|correlate`: SAEs on the sample (or any) dataset."""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np

from ssl_jax.core.errors import UserError
from ssl_jax.core.progress import Progress
from ssl_jax.io.atomic import write_json_atomic

ACTIVATIONS = "activations"  # tensorstore activation store under --out
SAE_DIR = "sae"              # orbax SAE folder under --out


def load_encoder(source: str, allow_random: bool):
    """(model, random?): `source` from local files, else (when allowed) random weights of
    its architecture, said on stderr."""
    from ssl_jax.io.weights import load_weights, random_note

    model, info = load_weights(source, allow_random=allow_random, seed=0)
    if info["random"]:
        click.echo(random_note(info), err=True)
    return model, info["random"]


def _dataset(path):
    from ssl_jax.io.dataset import sample_dataset

    return Path(path) if path else sample_dataset()


@click.group("sae")
def sae() -> None:
    """Sparse autoencoders on an encoder's residual stream."""


@sae.command("train")
@click.option("--model", "source", default="dinov2", show_default=True)
@click.option("--dataset", type=click.Path(), default=None, help="Default: the sample.")
@click.option("--layer", default=-1, show_default=True, help="Hidden state (-1 = last block).")
@click.option("--size", default=224, show_default=True, help="Square input size (px).")
@click.option("--tokens", type=click.Choice(["all", "patches", "cls"]), default="all",
              show_default=True)
@click.option("--expansion", default=64, show_default=True)
@click.option("--steps", default=1000, show_default=True)
@click.option("--batch-size", default=256, show_default=True)
@click.option("--lr", default=1e-3, show_default=True)
@click.option("--l1", default=1.0, show_default=True,
              help="Initial L1 coefficient, in units of the normalised input (E|x|^2 = width).")
@click.option("--target-l0", type=float, default=32.0, show_default=True,
              help="Adapt the L1 coefficient towards this L0 (0: fixed L1).")
@click.option("--seed", default=0, show_default=True)
@click.option("--allow-random-weights", is_flag=True)
@click.option("--out", "out_dir", type=click.Path(), default="sae_out", show_default=True)
def train_cmd(source, dataset, layer, size, tokens, expansion, steps, batch_size, lr, l1,
              target_l0, seed, allow_random_weights, out_dir):
    """Capture activations of LAYER for every dataset image and train an SAE on them."""
    from ssl_jax.io.sae_files import checkpoints_in, save_sae
    from ssl_jax.sae.model import TrainConfig, train_sae
    from ssl_jax.workflows.sae import capture_dataset

    t0 = time.time()
    out = Path(out_dir)
    model, rnd = load_encoder(source, allow_random_weights)

    bar = None

    def progress(done, total):
        nonlocal bar
        if bar is None:
            bar = Progress(total, "capturing layer activations", unit="images", enabled=True)
        bar.update(done - bar.done)

    acts = capture_dataset(model, _dataset(dataset), layer, size=(size, size),
                           store=out / ACTIVATIONS, progress=progress)
    if bar is not None:
        bar.close()
    t1 = time.time()
    click.echo(f"captured {acts.num_images} images, layer {acts.layer}, grid {acts.grid}, "
               f"width {acts.width} ({t1 - t0:.1f} s)")
    cfg = TrainConfig(expansion=expansion, steps=steps, batch_size=batch_size, lr=lr, l1=l1,
                      target_l0=target_l0 or None, seed=seed,
                      resample_every=max(1, steps // 4))
    model_sae, hist = train_sae(acts.tokens(tokens), cfg, log=click.echo,
                                checkpoints=checkpoints_in(out / "train_state"),
                                checkpoint_every=max(1, steps // 10))
    model_sae.meta.update({"model": source, "random_weights": rnd, "layer": acts.layer,
                           "tokens": tokens, "size": size})
    save_sae(out / SAE_DIR, model_sae)
    summary = {"before": hist["before"], "after": hist["after"], "train_s": time.time() - t1,
               "capture_s": t1 - t0, "random_weights": rnd, "config": cfg.to_dict()}
    write_json_atomic(out / "train.json", summary)
    b, a = hist["before"], hist["after"]
    click.echo(f"mse {b['mse']:.4g} -> {a['mse']:.4g} (mean baseline {a['baseline_mse']:.4g}); "
               f"explained variance {a['explained_variance']:.3f}; L0 {a['l0']:.1f}; "
               f"dead {a['dead_fraction']:.1%}; wrote {out / SAE_DIR}")


def _load(out_dir):
    from ssl_jax.io.sae_files import load_sae
    from ssl_jax.workflows.sae import load_activations

    out = Path(out_dir)
    for name in (ACTIVATIONS, SAE_DIR):
        if not (out / name).exists():
            raise click.ClickException(f"{out / name} not found: run `ssl-jax sae train --out "
                                       f"{out}` first")
    return out, load_activations(out / ACTIVATIONS), load_sae(out / SAE_DIR)


@sae.command("features")
@click.option("--out", "out_dir", type=click.Path(exists=True), default="sae_out",
              show_default=True)
@click.option("--top", default=8, show_default=True, help="Features to show.")
@click.option("--examples", default=4, show_default=True)
def features_cmd(out_dir, top, examples):
    """Most active features: top-image grids with their spatial maps (features.png)."""
    from ssl_jax.sae.analysis import image_activations, spectrum_examples

    out, acts, model_sae = _load(out_dir)
    pooled = image_activations(model_sae, acts, "mean")
    order = np.argsort(-pooled.mean(0), kind="stable")[:top]
    rows = []
    for k in order:
        ex = spectrum_examples(pooled[:, k], examples)
        rows.append({"feature": int(k), "mean": float(pooled[:, k].mean()),
                     "top_images": [acts.image_ids[i] for i in ex["max"]]})
        click.echo(f"feature {k:6d}  mean {pooled[:, k].mean():.3f}  top "
                   + ", ".join(acts.image_ids[i] for i in ex["max"]))
    write_json_atomic(out / "features.json", rows)
    from ssl_jax.figures.sae import top_image_grid

    path = top_image_grid(model_sae, acts, [r["feature"] for r in rows], out / "features.png",
                          n=examples)
    click.echo(f"wrote {out}/features.json, {path}")


@sae.command("score")
@click.option("--out", "out_dir", type=click.Path(exists=True), default="sae_out",
              show_default=True)
@click.option("--features", "n_features", default=256, show_default=True,
              help="Score the N most active features (by mean activation).")
@click.option("--size", "map_size", default=64, show_default=True, help="Heatmap size (px).")
def score_cmd(out_dir, n_features, map_size):
    """Score per-feature patch heatmaps against the expert boxes (IoU@90, coverage, pointing)
    per feature type; writes spatial.json and spatial.png."""
    from ssl_jax.io.dataset import load_dataset
    from ssl_jax.sae.analysis import feature_maps, image_activations, score_features, type_masks

    out, acts, model_sae = _load(out_dir)
    ds = load_dataset(acts.meta.get("dataset") or _dataset(None), lenient=True)
    anns = {a.path.name: a for a in ds.annotated()}
    rows = [i for i, im in enumerate(acts.image_ids) if im in anns]
    if not rows:
        raise UserError("no annotated images among the captured activations")
    pooled = image_activations(model_sae, acts, "mean")
    feats = np.argsort(-pooled[rows].mean(0), kind="stable")[:n_features]
    size = (map_size, map_size)
    masks, labels = type_masks([anns[acts.image_ids[i]] for i in rows], size)
    maps = feature_maps(model_sae, acts.patches[rows], acts.grid, feats)
    s = score_features(maps, masks, labels, features=feats, size=size)
    names = {}
    if ds.features:
        names = {int(f.index): f.name for f in ds.features}
    best = [{"feature": f, "type": names.get(t, str(t)), "score": v}
            for f, t, v in s.best("iou", 15)]
    for b in best[:10]:
        click.echo(f"feature {b['feature']:6d}  {b['type']:<24} IoU@90 {b['score']:.3f}")
    payload = {"features": s.features.tolist(), "types": [names.get(int(t), str(t))
                                                          for t in s.type_labels],
               "iou": np.nan_to_num(s.iou, nan=-1).tolist(),
               "coverage": np.nan_to_num(s.coverage, nan=-1).tolist(),
               "pointing": np.nan_to_num(s.pointing, nan=-1).tolist(),
               "images_per_type": s.count.tolist(), "best_iou": best}
    write_json_atomic(out / "spatial.json", payload)
    from ssl_jax.figures.sae import spatial_figure

    f0, t0, _ = s.best("iou", 1)[0]
    path = spatial_figure(model_sae, acts, anns, rows, f0, t0, out / "spatial.png")
    click.echo(f"wrote {out}/spatial.json, {path}")


@sae.command("correlate")
@click.option("--out", "out_dir", type=click.Path(exists=True), default="sae_out",
              show_default=True)
@click.option("--method", type=click.Choice(["pearson", "spearman"]), default="pearson")
@click.option("--alpha", default=0.05, show_default=True)
@click.option("--top-n", default=5, show_default=True, help="Images per feature (monosem.).")
@click.option("--embed-model", default="dinov2", show_default=True,
              help="Independent encoder for the monosemanticity embeddings.")
@click.option("--allow-random-weights", is_flag=True)
def correlate_cmd(out_dir, method, alpha, top_n, embed_model, allow_random_weights):
    """Correlate every feature with the style labels (one-vs-rest), BH-FDR; monosemanticity
    of every feature from an independent encoder; tiered selection (correlate.json)."""
    from ssl_jax.io.dataset import load_dataset, load_image
    from ssl_jax.models.preprocess import preprocess
    from ssl_jax.sae.analysis import (
        correlate,
        image_activations,
        label_matrix,
        monosemanticity,
        random_pair_calibration,
        select_tiers,
    )

    out, acts, model_sae = _load(out_dir)
    ds = load_dataset(acts.meta.get("dataset") or _dataset(None), lenient=True)
    style = {im.image_id: im.style_label for im in ds.images()} if ds.churches else {}
    keep = [i for i, im in enumerate(acts.image_ids) if style.get(im) is not None]
    pooled = image_activations(model_sae, acts, "mean")[keep]
    y, classes = label_matrix([style[acts.image_ids[i]] for i in keep])
    c = correlate(pooled, y, method=method, alpha=alpha)
    enc, rnd = load_encoder(embed_model, allow_random_weights)
    import ssl_jax

    paths = [ds.root / "images" / acts.image_ids[i] for i in keep]
    emb = []
    for i in range(0, len(paths), 8):
        pix = preprocess(enc, [load_image(p) for p in paths[i:i + 8]], size=(112, 112))[0]
        emb.append(np.asarray(ssl_jax.forward(enc, pix).pooled))
    emb = np.concatenate(emb)
    mono = monosemanticity(pooled, emb, top_n=top_n)
    cal = random_pair_calibration(emb)
    tiers = select_tiers(c, mono, cal.thresholds()["+1sd"])
    click.echo(f"{pooled.shape[1]} features x {len(classes)} styles on {len(keep)} images: "
               f"{int(c.significant.sum())} significant pairs at q < {alpha} ({method})")
    click.echo(f"random-pair similarity {cal.mean:.3f} ± {cal.std:.3f}; features above +1sd "
               f"{int(np.sum(mono >= cal.thresholds()['+1sd']))}, above +2sd "
               f"{int(np.sum(mono >= cal.thresholds()['+2sd']))}"
               + (" (embeddings from RANDOM weights)" if rnd else ""))
    for name, idx in tiers.items():
        click.echo(f"tier {name:<18} {len(idx)} features")
    payload = {"classes": classes.tolist(), "method": method, "alpha": alpha,
               "num_significant": int(c.significant.sum()),
               "calibration": {"mean": cal.mean, "std": cal.std, **cal.thresholds()},
               "tiers": {k: v.tolist() for k, v in tiers.items()},
               "top_correlations": sorted(
                   ({"feature": int(f), "class": int(classes[j]), "r": float(c.r[f, j]),
                     "q": float(c.q[f, j])} for f, j in zip(*np.nonzero(np.isfinite(c.q)),
                                                            strict=True)),
                   key=lambda d: d["q"])[:20],
               "embed_random_weights": rnd}
    write_json_atomic(out / "correlate.json", payload)
    click.echo(f"wrote {out}/correlate.json")
