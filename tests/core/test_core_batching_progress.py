"""The one padded-batching rule and the one progress bar (ssl_jax.core)."""

from __future__ import annotations

import numpy as np

from ssl_jax.core.batching import pad_rows, padded_batches
from ssl_jax.core.progress import BYTES, Progress, format_size


def test_padded_batches_repeat_the_last_real_index():
    order = np.array([5, 2, 7, 1, 0, 3, 6])
    got = [(idx.tolist(), n) for idx, n in padded_batches(order, 3)]
    assert got == [([5, 2, 7], 3), ([1, 0, 3], 3), ([6, 6, 6], 1)]
    assert list(padded_batches(np.arange(0), 4)) == []
    assert [n for _, n in padded_batches(np.arange(8), 4)] == [4, 4]


def test_pad_rows_keeps_full_batches_and_pads_with_the_last_row():
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    assert pad_rows(x, 3) is x
    np.testing.assert_array_equal(pad_rows(x[:2], 4), [[0, 1], [2, 3], [2, 3], [2, 3]])


def test_progress_names_units_rate_and_eta(capsys):
    bar = Progress(4, "extract dinov2", unit="images", enabled=True)
    for _ in range(4):
        bar.update()
    err = capsys.readouterr().err
    assert "extract dinov2: 0/4 images" in err and "ETA" in err
    last = err.split("\r")[-1]
    assert last.startswith("extract dinov2: 4/4 images [" + "#" * 28 + "]")
    assert "images/s" in last and last.endswith("s)\n")


def test_progress_in_bytes_counts_from_a_resumed_start(capsys):
    bar = Progress(4 << 20, "images.zip", unit=BYTES, done=1 << 20, enabled=True)
    bar.update(3 << 20)
    last = capsys.readouterr().err.split("\r")[-1]
    assert last.startswith("images.zip: 4.0 MB/4.0 MB [")
    assert "MB/s" in last or "KB/s" in last or "GB/s" in last
    assert format_size(512) == "512 B" and format_size(3 << 20) == "3.0 MB"


def test_progress_is_quiet_when_disabled(capsys):
    bar = Progress(3, "evaluate", enabled=False)
    bar.update(3)
    bar.close()
    assert capsys.readouterr().err == ""
