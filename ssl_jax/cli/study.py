"""`ssl-jax extract | evaluate | compare | report | demo`: thin click wrappers over
ssl_jax.workflows.study. Registered lazily by ssl_jax.cli."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ssl_jax.attention.registry import MAP_METHODS, METHOD_NAMES
from ssl_jax.workflows.study.config import StudyConfig, bundled_config, load_config

CONFIG_HELP = ("Study config: a TOML file or a bundled name ('sample', 'wikichurches'). "
               "Flags override its values.")

METHODS_HELP = (
    f"Map methods (repeat or comma-separate) from {', '.join(METHOD_NAMES)}; each model gets "
    f"those it has ({', '.join(n for n, m in MAP_METHODS.items() if m.needs_cls)} need a CLS "
    f"token; {', '.join(n for n, m in MAP_METHODS.items() if m.needs_map_head)} a MAP head).")


def _config(config: str | None, **overrides) -> StudyConfig:
    if config is None:
        base = bundled_config("sample")
    elif Path(config).suffix == ".toml" or Path(config).exists():
        base = load_config(config)
    else:
        base = bundled_config(config)
    for key in ("models", "methods"):
        if overrides.get(key) is not None:
            overrides[key] = tuple(v for item in overrides[key] for v in item.split(","))
            if not overrides[key]:
                overrides[key] = None
    return base.replace(**overrides)


def _writable_dir(path: str, what: str) -> Path:
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / ".ssl_jax_write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise click.ClickException(f"{what} {p} is not writable: {e.strerror or e}") from None
    return p


def _common_options(fn):
    opts = [
        click.option("--config", "config", default=None, help=CONFIG_HELP),
        click.option("--dataset", default=None,
                     help="'sample' (embedded) or a WikiChurches folder (images/, "
                          "building_parts.json, churches.json)."),
        click.option("--models", multiple=True, default=None,
                     help="Model aliases (repeat or comma-separate): dinov2, dinov3, mae, clip, "
                          "siglip2. Default: the config's."),
        click.option("--allow-random-weights", is_flag=True, default=None,
                     help="Run on random weights of the real architecture when a checkpoint "
                          "is not available (results are stamped as not scientific)."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


@click.command("extract")
@_common_options
@click.option("--cache", "cache_dir", default="runs/cache", show_default=True,
              help="Map cache folder (tensorstore zarr); reruns skip finished images.")
@click.option("--methods", multiple=True, default=None,
              help=METHODS_HELP)
@click.option("--batch-size", type=int, default=None, help="Images per forward pass.")
@click.option("--cache-dtype", type=click.Choice(["float32", "float16"]), default=None,
              help="Storage dtype of the cached maps.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar with ETA on stderr (default: when stderr is a terminal).")
def extract(config, dataset, models, allow_random_weights, cache_dir, methods, batch_size,
            cache_dtype, progress):
    """Compute attention maps of every model, layer and method into the map cache."""
    from ssl_jax.workflows.study.dataset import study_images
    from ssl_jax.workflows.study.run_extract import run_extract

    cfg = _config(config, dataset=dataset, models=models or None, methods=methods or None,
                  allow_random_weights=allow_random_weights, batch_size=batch_size,
                  cache_dtype=cache_dtype)
    _writable_dir(cache_dir, "cache folder")
    ids, paths = study_images(cfg.dataset)
    manifest = run_extract(cfg, cache_dir, ids, paths, progress=progress)
    click.echo(f"maps of {len(ids)} images x {len(manifest['weights'])} models in {cache_dir} "
               f"({manifest['timings_s']['total']:.1f}s)")
    if manifest["random_weights"]:
        click.echo(f"WARNING: {manifest['warning']}", err=True)


def main() -> None:  # pragma: no cover - `python -m ssl_jax.cli.study`
    sys.exit(extract())


def _results_dir(path: str) -> Path:
    return _writable_dir(path, "results folder")


@click.command("evaluate")
@_common_options
@click.option("--cache", "cache_dir", default="runs/cache", show_default=True,
              help="Map cache written by `ssl-jax extract`.")
@click.option("--out", "out_dir", default="runs/results", show_default=True,
              help="Folder for the metric tables (CSV) and per-image arrays.")
@click.option("--methods", multiple=True, default=None,
              help="Map methods to score (repeat or comma-separate). Default: the config's.")
@click.option("--partial", is_flag=True, default=False,
              help="Score what the cache holds when images are missing (they are counted "
                   "as n_missing in every table and listed in the manifest and report); "
                   "without it an incomplete cache is refused.")
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr.")
def evaluate(config, dataset, models, allow_random_weights, cache_dir, out_dir, methods,
             partial, progress):
    """Score every cached map against the expert boxes (IoU at each percentile, coverage,
    pointing game, MSE and KL to Gaussian targets) plus baselines, with bootstrap CIs."""
    from ssl_jax.workflows.study.evaluate import run_evaluate

    cfg = _config(config, dataset=dataset, models=models or None, methods=methods or None,
                  allow_random_weights=allow_random_weights)
    m = run_evaluate(cfg, cache_dir, _results_dir(out_dir), partial=partial,
                     progress=progress)
    click.echo(f"tables in {out_dir} ({m['timings_s']['total']:.1f}s)")
    if m.get("partial"):
        click.echo(f"WARNING: {m['warning_partial']}", err=True)


@click.command("compare")
@click.option("--config", "config", default=None, help=CONFIG_HELP)
@click.option("--results", "results_dir", default="runs/results", show_default=True,
              help="Folder written by `ssl-jax evaluate`.")
@click.option("--metric", "metrics", multiple=True, default=("iou@90", "coverage", "kl"),
              show_default=True, help="Metrics to compare (repeatable).")
@click.option("--test", type=click.Choice(["auto", "ttest", "wilcoxon"]), default="auto",
              show_default=True, help="Paired test; auto = Shapiro-gated choice.")
def compare(config, results_dir, metrics, test):
    """Paired tests between models (best layers), methods and baselines: mean differences
    with bootstrap CIs, p-values Holm-corrected within each family."""
    from ssl_jax.workflows.study.compare import run_compare

    m = run_compare(_config(config), results_dir, metrics=tuple(metrics), test=test)
    click.echo(f"{m['tests']} comparisons in {Path(results_dir) / 'compare.csv'}")


@click.command("report")
@click.option("--config", "config", default=None, help=CONFIG_HELP)
@click.option("--dataset", default=None, help="Dataset the maps came from (for overlays).")
@click.option("--cache", "cache_dir", default="runs/cache", show_default=True,
              help="Map cache (for the heatmap overlays).")
@click.option("--results", "results_dir", default="runs/results", show_default=True,
              help="Folder written by `ssl-jax evaluate` (and `compare`).")
@click.option("--out", "out_dir", default=None,
              help="Report folder (default: <results>/report).")
def report(config, dataset, cache_dir, results_dir, out_dir):
    """Figures (PNG) and one self-contained HTML page from the evaluation results."""
    from ssl_jax.workflows.study.report import run_report

    out = _writable_dir(out_dir, "report folder") if out_dir else None
    m = run_report(_config(config, dataset=dataset), cache_dir, results_dir, out)
    click.echo(f"report: {m['html']}")


@click.command("demo")
@click.option("--out", "out_dir", default="ssl-jax-demo", show_default=True,
              help="Folder for the cache, tables and report.")
@click.option("--models", multiple=True, default=None,
              help="Subset of models (default: all five).")
@click.option("--config", "config", default="sample", show_default=True,
              help="Run this study config end to end instead (TOML file or bundled name).")
@click.option("--progress/--no-progress", default=None, help="Progress bars on stderr.")
def demo(out_dir, models, config, progress):
    """The whole study (extract → evaluate → compare → report) on the embedded sample
    dataset. Without cached checkpoints it runs on random weights and says so everywhere."""
    from ssl_jax.workflows.study.pipeline import run_study

    cfg = _config(config, models=models or None, allow_random_weights=True)
    out = _writable_dir(out_dir, "demo folder")
    summary = run_study(cfg, out, progress=progress)
    click.echo(summary)
