"""Extraction: images → attention maps of every method and layer → the map cache.

One jitted function per model computes every requested method (ssl_jax.attention.registry)
from one forward pass with full attentions; batches are sharded over all local JAX devices
(data parallel). Batches are fixed groups of image indices, always padded to the full batch size, so every image is
computed in the same batch with the same shapes whether a run is fresh or resumed: results
do not depend on interruptions.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ssl_jax.attention.registry import applicable_methods, method_maps
from ssl_jax.core.batching import pad_rows
from ssl_jax.io.images import open_rgb
from ssl_jax.io.store import MapCache
from ssl_jax.models.model import Model
from ssl_jax.models.preprocess import Transform, preprocess
from ssl_jax.models.spec import ModelSpec


@functools.partial(jax.jit, static_argnames=("spec", "methods", "dtype"))
def _maps(params, pixels, *, spec: ModelSpec, methods: tuple[str, ...], dtype):
    return method_maps(spec, params, pixels, methods, dtype=dtype)


def compute_maps(model: Model, pixels, methods: Sequence[str], *,
                 mesh: Mesh | None = None) -> dict[str, np.ndarray]:
    """Maps of `methods` for a batch of preprocessed images: {method: (B, L, [H], gh, gw)}.

    With a `mesh` (axis "data"), the batch is split over its devices (B must divide evenly).
    """
    methods = applicable_methods(model.spec, methods)
    pixels = jnp.asarray(pixels, jnp.float32)
    params = model.params
    if mesh is not None:
        pixels = jax.device_put(pixels, NamedSharding(mesh, PartitionSpec("data")))
        params = jax.device_put(params, NamedSharding(mesh, PartitionSpec()))
    out = _maps(params, pixels, spec=model.spec, methods=methods, dtype=model.dtype)
    return {k: np.asarray(v) for k, v in out.items()}


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh over `devices` (default: all local devices) with the axis name "data"."""
    devices = list(devices) if devices is not None else jax.local_devices()
    return Mesh(np.asarray(devices), ("data",))


@dataclass
class ExtractStats:
    model: str
    images: int
    computed: int
    skipped: int
    compile_s: float
    run_s: float


ImageLoader = Callable[[int], object]  # index -> PIL image or uint8 array


def extract_model(
    cache: MapCache,
    alias: str,
    model: Model,
    load_image: ImageLoader,
    *,
    methods: Sequence[str],
    preprocess_mode: str = "squash",
    input_size: int = 224,
    batch_size: int = 8,
    cache_dtype: str = "float32",
    mesh: Mesh | None = None,
    progress: Callable[[int], None] | None = None,
    stop_after_batches: int | None = None,
) -> tuple[ExtractStats, list[Transform | None]]:
    """Extract every (image, method) cell of `alias` that `cache` does not hold complete:
    unfinished images, chunks that went missing, and methods added to finished images.

    `progress(n)` is called after each batch with the number of images it finished.
    `stop_after_batches` ends early (for tests of interrupted runs).
    Returns statistics and the preprocessing transforms of the images computed now.
    """
    mesh = mesh if mesh is not None else data_mesh()
    n_dev = mesh.devices.size
    if batch_size % n_dev:
        batch_size += n_dev - batch_size % n_dev  # every device gets the same share
    methods = applicable_methods(model.spec, methods)
    n = cache.num_images
    gaps = cache.missing(alias, methods)
    need = {m: gaps.get((alias, m), np.zeros(n, bool)) for m in methods}  # cells to compute
    todo = np.zeros(n, bool)
    for miss in need.values():
        todo |= miss
    size = (input_size, input_size) if preprocess_mode == "squash" else None
    transforms: list[Transform | None] = [None] * n
    computed = 0
    compile_s = run_s = 0.0
    batches = 0
    first = True
    for lo in range(0, n, batch_size):
        hi = min(lo + batch_size, n)
        if not todo[lo:hi].any():
            if progress:
                progress(hi - lo)
            continue
        images = [load_image(i) for i in range(lo, hi)]
        pixels, tfs = preprocess(model, images, mode=preprocess_mode, size=size)
        transforms[lo:hi] = tfs
        pixels = pad_rows(pixels, batch_size)  # fixed shapes
        t0 = time.perf_counter()
        # every method, always: one jitted function and the same numbers whatever is missing
        maps = compute_maps(model, pixels, methods, mesh=mesh)
        dt = time.perf_counter() - t0
        if first:
            compile_s, first = dt, False
        else:
            run_s += dt
        # write only the missing cells (a finished cell is never rewritten), the methods
        # missing from the same images in one write
        groups: dict[bytes, list[str]] = {}
        for m in methods:
            groups.setdefault(need[m][lo:hi].tobytes(), []).append(m)
        for key, ms in groups.items():
            rows = np.flatnonzero(np.frombuffer(key, bool))
            if rows.size:
                cache.write(alias, lo + rows, {m: maps[m][rows] for m in ms}, dtype=cache_dtype)
        computed += int(todo[lo:hi].sum())
        batches += 1
        if progress:
            progress(hi - lo)
        if stop_after_batches is not None and batches >= stop_after_batches:
            break
    stats = ExtractStats(alias, n, computed, int((~todo).sum()), compile_s, run_s)
    return stats, transforms


def load_image_file(path: str | Path, orientation: str = "stored"):

    return open_rgb(path, orientation=orientation)
