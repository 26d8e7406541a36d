"""How the CLI reports errors: a `UserError` (any subclass) is one line `error: ...` with exit
status 2; any other exception is a bug and keeps its traceback (never `error: ...`);
`--debug` (or SSL_JAX_DEBUG=1) shows the traceback of a user error too."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from ssl_jax.cli import main
from ssl_jax.core.errors import MissingFileError, UserError


@pytest.fixture
def compare_raises(monkeypatch):
    """Make the compare workflow raise `exc` (the CLI imports it when the command runs)."""
    import ssl_jax.workflows.study.compare as compare

    def set_error(exc: BaseException):
        def boom(*args, **kwargs):
            raise exc

        monkeypatch.setattr(compare, "run_compare", boom)

    return set_error


def test_user_error_is_one_line_and_exit_2(compare_raises):
    from ssl_jax.models import CheckpointError

    compare_raises(CheckpointError("runs/x/checkpoints/best/3: sha256 does not match"))
    r = CliRunner().invoke(main, ["compare"])
    assert r.exit_code == 2
    assert r.output.strip() == "error: runs/x/checkpoints/best/3: sha256 does not match"
    assert "Traceback" not in r.output


@pytest.mark.parametrize("exc", [KeyError("no_such_column"), ValueError("shapes (3,) (4,)"),
                                 OSError("disk on fire")])
def test_internal_error_keeps_its_traceback(compare_raises, exc):
    compare_raises(exc)
    r = CliRunner().invoke(main, ["compare"])
    assert r.exit_code == 1 and r.exception is exc  # raised on, not turned into a message
    assert "error:" not in r.output


@pytest.mark.subprocess
def test_internal_error_prints_a_traceback_in_a_real_process(tmp_path):
    code = ("import ssl_jax.workflows.study.compare as c\n"
            "def boom(*a, **k):\n    raise KeyError('no_such_column')\n"
            "c.run_compare = boom\n"
            "from ssl_jax.cli import main\nmain(['compare'])\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300, cwd=tmp_path)
    assert r.returncode == 1
    assert "Traceback" in r.stderr and "KeyError: 'no_such_column'" in r.stderr
    assert "error:" not in r.stderr


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback_of_a_user_error(compare_raises, monkeypatch, how):
    compare_raises(UserError("study config x.toml: unknown key 'modles'"))
    if how == "env":
        monkeypatch.setenv("SSL_JAX_DEBUG", "1")
    r = CliRunner().invoke(main, ["--debug", "compare"] if how == "flag" else ["compare"])
    assert r.exit_code == 2
    assert "Traceback (most recent call last)" in r.output and "in boom" in r.output
    assert r.output.strip().splitlines()[-1] == "error: study config x.toml: unknown key 'modles'"


def test_every_user_facing_error_derives_from_user_error():
    from ssl_jax.core.pixels import ImageError
    from ssl_jax.core.validate import OptionError
    from ssl_jax.io.dataset import AnnotationError
    from ssl_jax.io.dataset.download import ChecksumError, DownloadError, UnsafeArchiveError
    from ssl_jax.io.outdir import ResultsFolderError
    from ssl_jax.io.store import CacheError, IncompleteCacheError
    from ssl_jax.io.weights import WeightsUnavailable
    from ssl_jax.models.convert import CheckpointError
    from ssl_jax.models.spec import ConfigError as ModelConfigError
    from ssl_jax.workflows.finetune import TrainingDivergedError
    from ssl_jax.workflows.study.config import ConfigError as StudyConfigError

    for cls in (ImageError, OptionError, AnnotationError, ChecksumError, DownloadError,
                UnsafeArchiveError, ResultsFolderError, CacheError, IncompleteCacheError,
                WeightsUnavailable, CheckpointError, ModelConfigError, TrainingDivergedError,
                StudyConfigError, MissingFileError):
        assert issubclass(cls, UserError), cls
    # still catchable as what they were before there was a common base
    assert issubclass(DownloadError, OSError) and issubclass(ChecksumError, OSError)
    assert issubclass(MissingFileError, FileNotFoundError)
    assert str(DownloadError("a.bin: 404")) == "a.bin: 404"
