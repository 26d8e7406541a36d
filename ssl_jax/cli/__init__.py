"""`ssl-jax` command line: parse, call the library, print. No logic lives here."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import traceback

import click

from ssl_jax import models as _models
from ssl_jax.core.errors import UserError

DEBUG_ENV = "SSL_JAX_DEBUG"  # =1: like --debug

# Subcommands that live beside the code they drive, imported only when used (keeps
# `ssl-jax --help` fast and lets each part of the library own its command):
# name -> (module, attribute). A module that is not there yet simply adds no command.
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "download": ("ssl_jax.cli.data", "download"),
    "extract": ("ssl_jax.cli.study", "extract"),
    "evaluate": ("ssl_jax.cli.study", "evaluate"),
    "compare": ("ssl_jax.cli.study", "compare"),
    "report": ("ssl_jax.cli.study", "report"),
    "demo": ("ssl_jax.cli.study", "demo"),
    "finetune": ("ssl_jax.cli.train", "finetune"),
    "shift": ("ssl_jax.cli.train", "shift"),
    "probe": ("ssl_jax.cli.train", "probe"),
    "sae": ("ssl_jax.cli.sae", "sae"),
    "visualize": ("ssl_jax.cli.featvis", "visualize"),
    "bench": ("ssl_jax.cli.bench", "bench"),
}


def _lazy_command(name: str) -> click.Command | None:
    """The command `name` if its module is installed and defines it (else None)."""
    mod, attr = LAZY_COMMANDS[name]
    try:
        if importlib.util.find_spec(mod) is None:
            return None
    except ModuleNotFoundError:
        return None
    return getattr(importlib.import_module(mod), attr, None)


class _Errors(click.Group):
    """A `UserError` becomes one line `error: ...` and exit status 2 (with its traceback too
    under --debug); every other exception is a bug and keeps its traceback. Lazy subcommands."""

    def list_commands(self, ctx):
        lazy = [n for n in LAZY_COMMANDS if _lazy_command(n) is not None]
        return sorted(set(super().list_commands(ctx)) | set(lazy))

    def get_command(self, ctx, name):
        cmd = super().get_command(ctx, name)
        if cmd is None and name in LAZY_COMMANDS:
            cmd = _lazy_command(name)
        return cmd

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as e:
            if ctx.params.get("debug"):
                traceback.print_exc()
            click.echo(f"error: {e}", err=True)
            sys.exit(2)


@click.group(cls=_Errors)
@click.version_option(package_name="ssl-jax")
@click.option("--debug", is_flag=True, envvar=DEBUG_ENV,
              help=f"Show the traceback of user errors too (or set {DEBUG_ENV}=1).")
def main(debug: bool) -> None:
    """ssl_jax: exact JAX ports of five self-supervised ViTs and the attention-alignment study."""


@main.command("models")
def models_cmd() -> None:
    """List the five study encoders: alias, hub id, token layout and patch grid at their input size."""
    from ssl_jax.models.config import bundled_spec

    rows = [("alias", "hub id", "input", "patch", "grid", "tokens", "layout")]
    for alias, info in _models.MODELS.items():
        spec = bundled_spec(alias)
        h, w = spec.default_input_size
        lay = spec.layout(h, w)
        parts = (["CLS"] if lay.has_cls else []) + (
            [f"{lay.num_registers} reg"] if lay.num_registers else []) + [f"{lay.num_patches} patches"]
        rows.append((alias, info.hub_id, f"{h}x{w}", str(spec.patch_size),
                     f"{lay.grid_h}x{lay.grid_w}", str(lay.num_tokens), " + ".join(parts)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


@main.command("inspect")
@click.argument("source")
@click.option("--allow-pickle", is_flag=True, help="Allow reading pickled .bin weights (can run code).")
def inspect_cmd(source: str, allow_pickle: bool) -> None:
    """Load SOURCE (alias, hub id or checkpoint folder) and print its spec and parameter count."""
    from ssl_jax.io.weights import load_model

    model = load_model(source, allow_pickle=allow_pickle)
    spec = model.spec
    h, w = spec.default_input_size
    lay = spec.layout(h, w)
    click.echo(f"source        {model.source}")
    click.echo(f"family        {spec.family}")
    click.echo(f"parameters    {model.num_params:,}")
    click.echo(f"width/depth   {spec.hidden_size} x {spec.num_layers} layers, {spec.num_heads} heads, "
               f"MLP {spec.mlp_dim}")
    click.echo(f"patch         {spec.patch_size} px; input {h}x{w} -> grid {lay.grid_h}x{lay.grid_w}")
    click.echo(f"tokens        {lay.num_tokens} (CLS {'yes' if lay.has_cls else 'no'}, "
               f"{lay.num_registers} registers, {lay.num_patches} patches)")
    click.echo(f"norm eps      {spec.layer_norm_eps:g}; activation {spec.activation}")
    positions = (f"2-D RoPE (theta {spec.rope_theta:g})" if spec.rope_theta
                 else f"learned table {spec.pos_grid}x{spec.pos_grid}")
    click.echo(f"positions     {positions}")
    click.echo(f"pooled        {spec.pooler}")
    p = spec.preprocessing
    click.echo(f"preprocessing {p.resize_mode} {p.size}, crop {p.crop}, resample {p.resample}, "
               f"mean {p.mean}, std {p.std}")


if __name__ == "__main__":  # pragma: no cover
    main()
