"""Results folders updated as a unit: a stage writes every file of a run into a fresh
sibling folder and swaps it in at the end, so a crash at any moment (disk full, kill) leaves
either the old folder, whole, or the new one, never a mix of two runs.

`staged_folder(out, owned=..., keep=...)` yields the sibling. Entries of `out` named in
`keep` (an earlier stage's products this stage builds on) are hard-linked into it first;
those in `owned` (this stage's products and everything derived from them, now stale) are
not carried over. Any other entry of `out` is refused up front: the swap must never drop a
user's file (a results folder holds results only). The swap itself is one atomic
`renameat2(RENAME_EXCHANGE)` where the file system has it, else two renames; a crash between
those two leaves the previous folder in `.<name>.old-*`, which the next stage restores.
Folders get a normal folder's mode (0777 less the umask; `mkdtemp` would leave 0700).
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ssl_jax.core.errors import UserError
from ssl_jax.io.atomic import current_umask

EVALUATE_FILES = ("summary.csv", "per_image.csv", "heads.csv", "by_style.csv",
                  "by_feature.csv", "per_image_metrics.npz", "best_layers.json",
                  "evaluate_manifest.json")
COMPARE_FILES = ("compare.csv", "compare_manifest.json")
REPORT_FOLDER = "report"
_PROBE = ".ssl_jax_write_test"  # the CLI's writability probe


class ResultsFolderError(UserError):
    pass


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def _recover(out: Path) -> None:
    """Undo what a crashed swap or stage left next to `out`."""
    olds = sorted(out.parent.glob(f".{out.name}.old-*"))
    if not out.exists() and olds:
        os.replace(olds[-1], out)  # the crash came between the two renames
        olds = olds[:-1]
    for p in [*olds, *out.parent.glob(f".{out.name}.new-*")]:
        shutil.rmtree(p, ignore_errors=True)


def _ours(name: str, names: Iterable[str]) -> bool:
    """`name` is one of `names`, or an atomic writer's temporary of one of them."""
    return name == _PROBE or any(name == n or name.startswith(f".{n}.") for n in names)


def _link_tree(src: Path, dst: Path) -> None:
    if src.is_dir():
        shutil.copytree(src, dst, copy_function=_link_or_copy)
    else:
        _link_or_copy(src, dst)


def _link_or_copy(src, dst) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@contextmanager
def staged_folder(out: str | os.PathLike, *, owned: Iterable[str] = (),
                  keep: Iterable[str] = (), any_owned=None) -> Iterator[Path]:
    """Yield a new sibling of `out` to write this run's files into; on normal exit it
    replaces `out` whole, on an exception it is removed and `out` is left as it was.

    `any_owned(name) -> bool` extends `owned` by a rule (e.g. every *.png of a report)."""
    out = Path(out).absolute()
    owned, keep = tuple(owned), tuple(keep)
    out.parent.mkdir(parents=True, exist_ok=True)
    _recover(out)
    if out.exists():
        if not out.is_dir():
            raise ResultsFolderError(f"results folder {out} is a file")
        foreign = sorted(p.name for p in out.iterdir()
                         if not _ours(p.name, owned + keep)
                         and not (any_owned and any_owned(p.name)))
        if foreign:
            shown = ", ".join(foreign[:3]) + (f", … {len(foreign) - 3} more"
                                              if len(foreign) > 3 else "")
            raise ResultsFolderError(
                f"results folder {out} holds files that are not this command's results "
                f"({shown}); it is replaced as a whole, so use an empty or new folder")
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    try:
        os.chmod(stage, 0o777 & ~current_umask())
        if out.exists():
            for name in keep:
                if (out / name).exists():
                    _link_tree(out / name, stage / name)
        yield stage
        if not out.exists():
            os.replace(stage, out)
        elif _exchange(stage, out):
            shutil.rmtree(stage)  # now holds the old folder
        else:
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old)  # (an empty folder is replaced by rename)
            os.replace(stage, out)
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
