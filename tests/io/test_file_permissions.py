"""Issue 12 case 9: files written atomically get a normal file's mode (0666 & ~umask), not
mkstemp's 0600 (on e98ceba every CSV/JSON/manifest/npz/HTML was 0600 under umask 022)."""

import os
import stat

import numpy as np
import pytest

from ssl_jax.io.atomic import atomic_path, write_json_atomic, write_text_atomic


@pytest.fixture
def umask():
    old = os.umask(0o022)
    os.umask(old)
    yield lambda m: os.umask(m)
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writers_respect_umask(tmp_path, umask, mask, mode):
    umask(mask)
    paths = [write_json_atomic(tmp_path / "a.json", {"x": 1}),
             write_text_atomic(tmp_path / "b.csv", "a,b\n")]
    with atomic_path(tmp_path / "c.npz", suffix=".npz") as tmp:
        np.savez(tmp, x=np.zeros(3))
    paths.append(tmp_path / "c.npz")
    for p in paths:
        assert stat.S_IMODE(p.stat().st_mode) == mode, p


def test_rewrite_keeps_normal_mode(tmp_path, umask):
    umask(0o022)
    p = write_json_atomic(tmp_path / "a.json", {"x": 1})
    write_json_atomic(p, {"x": 2})
    assert stat.S_IMODE(p.stat().st_mode) == 0o644
