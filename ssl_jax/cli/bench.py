"""`ssl-jax bench NAME [ARGS]`: run a benchmark of the source checkout's benchmarks/ folder.

Benchmarks compare ssl_jax with the PyTorch reference in the same run and need torch, so
they live beside the tests rather than in the installed package.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click


def _benchmarks_dir() -> Path | None:
    for base in (Path.cwd(), Path(__file__).resolve().parents[1]):
        if (base / "benchmarks" / "__init__.py").exists():
            return base / "benchmarks"
    return None


@click.command("bench", context_settings={"ignore_unknown_options": True,
                                          "allow_extra_args": True})
@click.argument("name", required=False)
@click.pass_context
def bench(ctx: click.Context, name: str | None) -> None:
    """Run benchmark NAME (e.g. forward, metrics_grid, bootstrap, finetune_step,
    attention_memory); extra arguments go to it (try `ssl-jax bench forward --help`).
    Without NAME, list them."""
    folder = _benchmarks_dir()
    if folder is None:
        raise click.ClickException("benchmarks/ not found: run from the ssl_jax source "
                                   "checkout (they need torch: pip install torch==2.13.0)")
    names = sorted(p.stem for p in folder.glob("*.py")
                   if p.stem not in ("__init__", "common") and not p.stem.startswith("_"))
    if name is None:
        click.echo("\n".join(names))
        return
    if name not in names:
        raise click.ClickException(f"unknown benchmark {name!r}; have: {', '.join(names)}")
    r = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", *ctx.args],
                       cwd=folder.parent, check=False)
    sys.exit(r.returncode)
