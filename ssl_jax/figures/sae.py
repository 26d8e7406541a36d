"""Figures: top-image grids per feature with the feature's patch map, a spatial heatmap with
the expert boxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ssl_jax.attention.heatmap import to_heatmap
from ssl_jax.io.dataset import load_image
from ssl_jax.sae.analysis import feature_maps, image_activations


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _image(acts, i: int, size: int = 112) -> np.ndarray:

    root = Path(acts.meta.get("dataset") or "")
    im = load_image(root / "images" / acts.image_ids[i]).resize((size, size))
    return np.asarray(im)



def _overlay(ax, acts, i: int, heat) -> None:
    """Image i of the captured set with a feature heatmap on top."""
    ax.imshow(_image(acts, i))
    ax.imshow(heat, alpha=0.45, cmap="jet")


def _save(plt, fig, path) -> Path:
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path

def top_image_grid(sae, acts, features, path, n: int = 4) -> Path:
    """One row per feature: its n top images (mean activation), each overlaid with the map."""
    plt = _plt()
    pooled = image_activations(sae, acts, "mean")
    fig, axes = plt.subplots(len(features), n, figsize=(2 * n, 2 * len(features)),
                             squeeze=False)
    for r, k in enumerate(features):
        top = np.argsort(-pooled[:, k], kind="stable")[:n]
        maps = feature_maps(sae, acts.patches[top], acts.grid, [k])[:, 0]
        heat = np.asarray(to_heatmap(maps, (112, 112)))
        for c, i in enumerate(top):
            ax = axes[r, c]
            _overlay(ax, acts, int(i), heat[c])
            ax.set_axis_off()
            ax.set_title(f"f{k} {pooled[i, k]:.2f}", fontsize=7)
    return _save(plt, fig, path)


def spatial_figure(sae, acts, anns, rows, feature: int, type_label: int, path,
                   n: int = 4) -> Path:
    """The feature's heatmap on up to n annotated images, boxes of `type_label` drawn."""
    plt = _plt()
    chosen = [i for i in rows if type_label in np.asarray(anns[acts.image_ids[i]].labels)][:n]
    chosen = chosen or list(rows[:n])
    maps = feature_maps(sae, acts.patches[chosen], acts.grid, [feature])[:, 0]
    heat = np.asarray(to_heatmap(maps, (112, 112)))
    fig, axes = plt.subplots(1, len(chosen), figsize=(2.5 * len(chosen), 2.7), squeeze=False)
    for c, i in enumerate(chosen):
        ax = axes[0, c]
        _overlay(ax, acts, i, heat[c])
        a = anns[acts.image_ids[i]]
        for box, lb in zip(np.asarray(a.boxes), np.asarray(a.labels).ravel(), strict=False):
            if lb != type_label:
                continue
            x0, y0, x1, y1 = np.asarray(box) * 112
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="white",
                                       lw=1.2))
        ax.set_axis_off()
        ax.set_title(acts.image_ids[i], fontsize=7)
    fig.suptitle(f"SAE feature {feature} vs type {type_label}", fontsize=9)
    return _save(plt, fig, path)
