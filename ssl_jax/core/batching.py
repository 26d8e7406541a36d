"""Fixed-size batches: every batch has exactly `batch_size` rows, a short last batch padded
by repeating its last real row, so a jitted function sees one shape (compiles once) and a
batch never holds rows from outside its own range. Padded rows are computed and dropped;
every use is row-independent (or masked), so they change no result."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def pad_rows(x: np.ndarray, batch_size: int) -> np.ndarray:
    """`x` (k ≤ batch_size rows, k ≥ 1) with its last row repeated up to batch_size rows."""
    k = len(x)
    if k >= batch_size:
        return x
    return np.concatenate([x, np.repeat(x[-1:], batch_size - k, axis=0)])


def padded_batches(order, batch_size: int) -> Iterator[tuple[np.ndarray, int]]:
    """(indices padded to batch_size, real count) for consecutive batches of `order`."""
    order = np.asarray(order)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        yield pad_rows(idx, batch_size), len(idx)
