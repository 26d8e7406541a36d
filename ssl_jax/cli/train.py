"""`ssl-jax finetune`, `ssl-jax probe` and `ssl-jax shift`: parse, call the library, print."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ssl_jax.core.validate import RULES, cli_float_list, rule


def _model(source: str, allow_random: bool, seed: int):
    """`source`'s weights (downloads allowed unless HF_HUB_OFFLINE), else random ones."""
    from ssl_jax.io.weights import load_weights, random_note

    model, info = load_weights(source, allow_random=allow_random, seed=seed,
                               local_files_only=None)
    if info["random"]:
        click.echo(random_note(info), err=True)
    return model


def _size(input_size: int | None):
    return None if input_size is None else (input_size, input_size)


@click.command("finetune")
@click.option("--model", "source", required=True,
              help="Alias (dinov2, dinov3, mae, clip, siglip2), hub id or checkpoint folder.")
@click.option("--dataset", default="sample", show_default=True,
              help="WikiChurches folder (images/, building_parts.json, churches.json) or 'sample'.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Run folder (checkpoints, split, manifest). An existing run is resumed.")
@click.option("--strategy", type=click.Choice(["full", "linear", "lora"]), default="full",
              show_default=True)
@click.option("--epochs", default=3, show_default=True, callback=rule("epochs"))
@click.option("--batch-size", default=16, show_default=True, callback=rule("batch_size"))
@click.option("--lr-backbone", type=float, default=None, callback=rule("lr_backbone"),
              help="Backbone / adapter LR [default: 1e-5 full, 1e-4 lora].")
@click.option("--lr-head", default=1e-3, show_default=True, callback=rule("lr_head"))
@click.option("--weight-decay", default=0.01, show_default=True, callback=rule("weight_decay"))
@click.option("--no-decay-norms-biases", is_flag=True,
              help="Weight decay on weight matrices only (spare norms, biases, tokens).")
@click.option("--warmup-ratio", default=0.1, show_default=True, callback=rule("warmup_ratio"),
              help="Fraction of the steps with a linear warmup (0 to 1).")
@click.option("--max-grad-norm", default=1.0, show_default=True, callback=rule("max_grad_norm"),
              help="Clip the global gradient norm to this (0: no clipping).")
@click.option("--no-augment", is_flag=True)
@click.option("--no-class-weights", is_flag=True)
@click.option("--seed", default=42, show_default=True, callback=rule("seed"))
@click.option("--lora-rank", default=8, show_default=True, callback=rule("lora_rank"))
@click.option("--lora-alpha", default=32.0, show_default=True, callback=rule("lora_alpha"))
@click.option("--lora-dropout", default=0.1, show_default=True, callback=rule("lora_dropout"))
@click.option("--lora-targets", default="q,v", show_default=True,
              help="Comma-separated: q, k, v, o, fc1, fc2.")
@click.option("--input-size", type=int, default=None, callback=rule("input_size"),
              help="Square input side (patch multiple) [default: the model's].")
@click.option("--val-fraction", default=0.2, show_default=True, callback=rule("val_fraction"))
@click.option("--val-on-annotated-eval", is_flag=True,
              help="Exploratory (leaky) policy: validate on the annotated evaluation images.")
@click.option("--save-every", default=0, show_default=True, callback=rule("save_every"),
              help="Also checkpoint every N steps (0: at epoch ends only).")
@click.option("--max-steps", type=int, default=None, callback=rule("max_steps"),
              help="Stop once the run's global step (optimizer steps over all invocations) "
                   "reaches N; continue with a larger --max-steps or without it. A run already "
                   "at N does nothing and says so.")
@click.option("--export", "export_dir", type=click.Path(file_okay=False), default=None,
              help="When the run finishes (all epochs), export its best checkpoint as a Hugging "
                   "Face folder here; a run stopped by --max-steps exports nothing yet and says "
                   "so.")
@click.option("--allow-random-weights", is_flag=True,
              help="If the checkpoint is unavailable, train a random-weight model (demo only).")
def finetune(source, dataset, out, strategy, epochs, batch_size, lr_backbone, lr_head,
             weight_decay, no_decay_norms_biases, warmup_ratio, max_grad_norm, no_augment,
             no_class_weights, seed, lora_rank, lora_alpha, lora_dropout, lora_targets,
             input_size, val_fraction, val_on_annotated_eval, save_every, max_steps, export_dir,
             allow_random_weights):
    """Fine-tune an encoder for 4-way style classification (full, linear head or LoRA)."""
    from ssl_jax.io.runs import export_hf
    from ssl_jax.train.lora import LoraConfig
    from ssl_jax.workflows.finetune import FinetuneConfig
    from ssl_jax.workflows.finetune import finetune as run
    from ssl_jax.workflows.train_data import load_training_data

    lora = LoraConfig(rank=lora_rank, alpha=lora_alpha, dropout=lora_dropout,
                      targets=tuple(t.strip() for t in lora_targets.split(",") if t.strip()))
    config = FinetuneConfig(
        strategy=strategy, epochs=epochs, batch_size=batch_size, lr_backbone=lr_backbone,
        lr_head=lr_head, weight_decay=weight_decay,
        decay_norms_and_biases=not no_decay_norms_biases, warmup_ratio=warmup_ratio,
        max_grad_norm=max_grad_norm, augment=not no_augment,
        class_weighted=not no_class_weights, seed=seed, lora=lora, save_every=save_every)
    model = _model(source, allow_random_weights, seed)
    from ssl_jax.io.dataset import EXPLORATORY_POLICY, PRIMARY_POLICY

    data, split = load_training_data(
        dataset, model.spec, input_size=_size(input_size), seed=seed, val_fraction=val_fraction,
        policy=EXPLORATORY_POLICY if val_on_annotated_eval else PRIMARY_POLICY)
    import jax

    click.echo(f"{model.source}: {strategy}, {len(data.train_images)} train / "
               f"{len(data.val_images)} val images at {data.train_images.shape[1]}px, "
               f"split {split.split_id}, data parallel over {len(jax.local_devices())} "
               "device(s)")
    res = run(model, data, config, out, stop_after_steps=max_steps, log=click.echo,
              split_artifact=split.to_dict())
    if not res.finished:
        total = res.total_steps
        more = (f"to continue, run this command again with --max-steps greater than {res.steps} "
                f"(the run has {total} steps) or without --max-steps")
        if res.steps == res.start_step:
            click.echo(f"{out}: the run is already at step {res.steps} of {total} "
                       f"(--max-steps {max_steps}): nothing to do; {more}")
        else:
            click.echo(f"stopped at step {res.steps} of {total} (--max-steps {max_steps}); "
                       f"{more}")
        if export_dir:
            click.echo(f"--export: nothing exported to {export_dir} yet; the best checkpoint is "
                       f"exported when the run finishes (step {total})")
        return
    click.echo(f"done: {res.steps} steps, best val accuracy {res.best_val_accuracy:.4f} "
               f"(step {res.best_step}); run folder {out}")
    if export_dir:
        export_hf(out, export_dir)
        click.echo(f"exported the best checkpoint to {export_dir}")


@click.command("probe")
@click.option("--model", "source", required=True, help="Alias, hub id, checkpoint or run folder.")
@click.option("--dataset", default="sample", show_default=True)
@click.option("--input-size", type=int, default=None, callback=rule("input_size"))
@click.option("--batch-size", default=16, show_default=True, callback=rule("batch_size"))
@click.option("--folds", default=5, show_default=True, callback=rule("folds"))
@click.option("--seed", default=42, show_default=True, callback=rule("seed"))
@click.option("--exclude-annotated", is_flag=True,
              help="Leave the annotated evaluation images out of the probe data.")
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="Write the result JSON here.")
@click.option("--allow-random-weights", is_flag=True)
def probe(source, dataset, input_size, batch_size, folds, seed, exclude_annotated, out,
          allow_random_weights):
    """Linear probe (scaler + logistic regression, stratified k-fold) on frozen features."""
    from ssl_jax.io.dataset import STYLE_NAMES, dataset_root, load_dataset
    from ssl_jax.train.probe import extract_features, linear_probe
    from ssl_jax.workflows.train_data import decode_images

    model = _model(source, allow_random_weights, seed)
    ds = load_dataset(dataset_root(dataset), require_churches=True)
    annotated = set(ds.annotated_ids)
    items = [it for it in ds.images(labeled_only=True)
             if not (exclude_annotated and it.image_id in annotated)]
    size = _size(input_size) or model.spec.default_input_size
    images = decode_images([it.path for it in items], size, model.spec.preprocessing.resample)
    feats = extract_features(model, images, batch_size)
    res = linear_probe(feats, [it.style_label for it in items], class_names=STYLE_NAMES,
                       n_splits=folds, random_state=seed)
    click.echo(f"{model.source}: {res.num_samples} images, {res.num_features} features")
    click.echo(f"cv accuracy {res.cv_accuracy:.4f} ± {res.cv_std:.4f} ({folds}-fold), "
               f"cv macro-F1 {res.cv_macro_f1:.4f}")
    click.echo(f"train accuracy {res.train_accuracy:.4f}, train macro-F1 "
               f"{res.train_macro_f1:.4f}")
    click.echo("cv confusion matrix (rows true, cols predicted: "
               + ", ".join(res.class_names) + ")")
    for row in res.cv_confusion_matrix:
        click.echo("  " + " ".join(f"{v:4d}" for v in row))
    if out:
        from ssl_jax.io.atomic import write_text_atomic

        Path(out).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out, json.dumps({"model": model.source, "dataset": str(dataset),
                                           **res.to_json()}, indent=1))


@click.command("shift")
@click.option("--run", "runs", multiple=True, required=True, type=click.Path(file_okay=False),
              help="Fine-tuning run folder (repeat for the model x strategy family).")
@click.option("--dataset", default="sample", show_default=True,
              help="Dataset folder with the annotated images, or 'sample'.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False))
@click.option("--layer", default=-1, show_default=True, callback=rule("layer"),
              help="Layer (negative: from the end).")
@click.option("--size", default=224, show_default=True, callback=rule("size"),
              help="Heatmap / mask side in pixels.")
@click.option("--percentiles", default="90,50", show_default=True,
              callback=cli_float_list(RULES["percentile"]),
              help="Comma-separated IoU percentiles, each in [0, 100].")
@click.option("--no-emd", is_flag=True, help="Skip the (host-side) EMD metric.")
@click.option("--resamples", default=10_000, show_default=True, callback=rule("resamples"),
              help="Bootstrap resamples.")
@click.option("--seed", default=42, show_default=True, callback=rule("seed"))
@click.option("--no-figures", is_flag=True)
def shift(runs, dataset, out, layer, size, percentiles, no_emd, resamples, seed, no_figures):
    """Frozen vs fine-tuned attention per annotated image: every metric, paired bootstrap CI,
    paired test, d_z, Holm across the runs; side-by-side, difference and breakdown figures."""
    from ssl_jax.io.dataset import dataset_root
    from ssl_jax.workflows.shift import shift as run

    res = run(list(runs), dataset_root(dataset), out, layer=layer, size=size,
              percentiles=percentiles,
              with_emd=not no_emd, n_resamples=resamples, seed=seed, figures=not no_figures,
              log=click.echo)
    if "warning" in res:
        click.echo(f"WARNING: {res['warning']}", err=True)
    click.echo(f"{'run':<18} {'metric':<9} {'frozen':>8} {'tuned':>8} {'delta':>8} "
               f"{'95% CI':>19} {'d_z':>6} {'test':>8} {'p_holm':>8}")
    for r in res["rows"]:
        click.echo(f"{r['run']:<18} {r['metric']:<9} {r['frozen_mean']:8.4f} "
                   f"{r['finetuned_mean']:8.4f} {r['delta']:+8.4f} "
                   f"[{r['ci_lo']:+.4f},{r['ci_hi']:+.4f}] {r['d_z']:6.2f} {r['test']:>8} "
                   f"{r['p_holm']:8.2g}")
    click.echo(f"wrote {Path(out) / 'shift.json'}, shift.csv"
               + ("" if no_figures else ", figures/"))
