"""Atomic file writes: every file ssl_jax writes goes to a temporary sibling that is flushed,
fsynced and renamed over the target, so a crash leaves either the old file or the new one,
never a torn one (a reader never sees half a JSON, CSV, npz or HTML file). Files get the
permissions of a normally created file (0666 less the umask): `mkstemp` makes its file 0600,
and that mode would otherwise survive the rename, hiding results from a cluster's other users."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def current_umask() -> int:
    """The process umask (reading it means setting it; it is put back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to `path`; on normal exit it replaces `path`, on an
    exception it is removed. `suffix` keeps writers that append extensions (np.savez) happy."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp",
                                    dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~current_umask())
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike, payload: Any, *, indent: int = 2,
                      sort_keys: bool = False) -> Path:
    """JSON with a trailing newline; values JSON cannot represent are written with str()."""
    return write_text_atomic(
        path, json.dumps(payload, indent=indent, sort_keys=sort_keys, default=str) + "\n")
