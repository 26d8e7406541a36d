"""`ssl-jax download`: parse options, call `ssl_jax.io.dataset.download`, print. No logic here."""

from __future__ import annotations

from pathlib import Path

import click

from ssl_jax.core.errors import UserError
from ssl_jax.core.progress import format_size
from ssl_jax.io.dataset import download as dl


def _names(values: tuple[str, ...]) -> list[str]:
    return [n for v in values for n in v.split(",") if n]


@click.command("download")
@click.argument("names", nargs=-1)
@click.option("--dest", "-o", "--output", "dest", default=".", show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Dataset folder to download into.")
@click.option("--files", "-f", multiple=True,
              help="Files to fetch (repeat or comma-separate; 'all' for every file). "
                   "Default: the files the study needs (see --list).")
@click.option("--exclude", multiple=True, help="Files to leave out (repeat or comma-separate).")
@click.option("--list", "list_only", is_flag=True, help="List the record's files and exit.")
@click.option("--verify-only", is_flag=True,
              help="Only check files already in DEST (size, and md5 where known).")
@click.option("--extract/--no-extract", default=False, show_default=True,
              help="Unpack images.zip into DEST/images after downloading it.")
@click.option("--base-url", default=dl.BASE_URL, show_default=True, help="Where the files live.")
@click.option("--checksums-url", default=dl.RECORD_API_URL, show_default=True,
              help="Zenodo record API to read md5 checksums from.")
@click.option("--no-remote-checksums", is_flag=True,
              help="Do not fetch checksums (verify sizes and any pinned md5 only).")
@click.option("--retries", default=5, show_default=True, help="Retries per file after a dropped connection.")
@click.option("--timeout", default=30.0, show_default=True, help="Socket timeout in seconds.")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Show a progress bar on stderr.")
def download(names, dest, files, exclude, list_only, verify_only, extract, base_url,
             checksums_url, no_remote_checksums, retries, timeout, progress) -> None:
    """Download the WikiChurches dataset (Zenodo record 5166987) into DEST, resumably.

    NAMES (or --files) pick files; partial downloads resume with HTTP range requests; each
    file is checked by exact size and md5. Unzip images.zip yourself or pass --extract.
    """
    chosen = _names(names) + _names(files) or None
    excluded = _names(exclude)
    checksums = None if no_remote_checksums else "auto"

    def log(msg: str) -> None:
        click.echo(msg, err=True)

    try:
        if list_only:
            default = {f.name for f in dl.select_files(None)}
            total = 0
            for f in dl.select_files(chosen or ["all"], excluded):
                mark = "*" if f.name in default else " "
                click.echo(f"{mark} {f.name:<22} {format_size(f.size):>10}  {f.description}")
                total += f.size
            click.echo(f"  {'total':<22} {format_size(total):>10}  (* = downloaded by default)")
            return
        if verify_only:
            results = dl.verify(chosen, dest, exclude=excluded, checksums=checksums,
                                checksums_url=checksums_url, timeout=timeout, log=log)
            for r in results:
                click.echo(f"{'ok  ' if r.ok else 'FAIL'} {r.name}: {r.detail}")
            bad = [r for r in results if not r.ok]
            if bad:
                raise click.ClickException(f"{len(bad)} of {len(results)} files failed verification")
            return
        paths = dl.download(chosen, dest, exclude=excluded, base_url=base_url, checksums=checksums,
                            checksums_url=checksums_url, extract=extract, timeout=timeout,
                            retries=retries, progress=progress, log=log)
        click.echo(f"{len(paths)} files in {dest}")
    except UserError as e:  # (download errors are exit status 1, as before)
        raise click.ClickException(str(e)) from None
