"""Study figures (matplotlib, Agg): overlays with expert boxes, per-head grids, layer
progression with CI bands, model comparison bars, style / feature-type breakdowns.

Every function takes plain arrays / row dicts and returns a saved PNG path; `stamp` (e.g.
the random-weights warning) is written across the figure when given. A metric's axis label
(and which way is better) comes from the metric registry; other names are shown as given.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from ssl_jax.io.atomic import atomic_path
from ssl_jax.metrics.registry import axis_label

MODEL_COLORS = {"dinov2": "#1f77b4", "dinov3": "#2ca02c", "mae": "#ff7f0e", "clip": "#d62728",
                "siglip2": "#9467bd"}


def _finish(fig, path: Path, stamp: str | None) -> Path:
    if stamp:
        fig.text(0.5, 0.5, stamp.upper(), ha="center", va="center", fontsize=20,
                 color="red", alpha=0.25, rotation=20, transform=fig.transFigure)
        fig.text(0.01, 0.005, stamp, ha="left", va="bottom", fontsize=8, color="red")
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def overlay_grid(images: Sequence[np.ndarray], heatmaps: Sequence[Sequence[np.ndarray]],
                 boxes: Sequence[np.ndarray], row_labels: Sequence[str],
                 col_labels: Sequence[str], path: Path, *, stamp: str | None = None,
                 title: str = "") -> Path:
    """Rows = images, columns = (image + boxes, then one heatmap overlay per model/method).

    images: (H, W, 3) uint8 in the map frame; heatmaps[r][c]: (H, W) in [0, 1];
    boxes[r]: (K, 4) pixel (x0, y0, x1, y1) in the same frame.
    """
    rows, cols = len(images), 1 + len(col_labels)
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, 2.1 * rows), squeeze=False)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.imshow(images[r])
            if c > 0:
                ax.imshow(heatmaps[r][c - 1], cmap="jet", alpha=0.5, vmin=0, vmax=1)
            for x0, y0, x1, y1 in np.asarray(boxes[r]).reshape(-1, 4):
                ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False,
                                           edgecolor="lime", linewidth=1.2))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("image + boxes" if c == 0 else col_labels[c - 1], fontsize=8)
            if c == 0:
                ax.set_ylabel(row_labels[r], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return _finish(fig, path, stamp)


def layer_progression(series: dict[str, dict[str, np.ndarray]], path: Path, *, metric: str,
                      stamp: str | None = None) -> Path:
    """Lines of a metric's mean over layers with CI bands; series[label] has "layer",
    "mean", "lo", "hi" arrays."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for label, s in series.items():
        color = MODEL_COLORS.get(label.split("/")[0])
        ax.plot(s["layer"], s["mean"], marker="o", ms=3, label=label, color=color)
        ax.fill_between(s["layer"], s["lo"], s["hi"], alpha=0.2, color=color)
    ax.set_xlabel("layer")
    ax.set_ylabel(axis_label(metric))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(f"{metric} by layer (mean, 95% bootstrap CI)", fontsize=10)
    return _finish(fig, path, stamp)


def comparison_bars(labels: Sequence[str], mean: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                    path: Path, *, metric: str, baselines: dict[str, float] | None = None,
                    stamp: str | None = None, title: str | None = None) -> Path:
    """Bars with CI whiskers (e.g. models at their best layer), baselines as dashed lines."""
    mean, lo, hi = (np.asarray(a, float) for a in (mean, lo, hi))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(labels) + 2), 3.6))
    x = np.arange(len(labels))
    colors = [MODEL_COLORS.get(lbl.split("/")[0], "#777777") for lbl in labels]
    ax.bar(x, mean, color=colors, alpha=0.85)
    ax.errorbar(x, mean, yerr=[mean - lo, hi - mean], fmt="none", ecolor="black", capsize=3)
    for i, (name, value) in enumerate((baselines or {}).items()):
        ax.axhline(value, ls="--", lw=1, color=plt.cm.Greys(0.4 + 0.15 * i), label=name)
    if baselines:
        ax.legend(fontsize=7)
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(axis_label(metric))
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title or f"{metric} (mean, 95% bootstrap CI)", fontsize=10)
    return _finish(fig, path, stamp)


def head_grid(values: dict[str, np.ndarray], path: Path, *, metric: str,
              stamp: str | None = None) -> Path:
    """One panel per model: (layers, heads) matrix of a per-head metric."""
    n = len(values)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.2), squeeze=False)
    vmax = max(float(np.nanmax(v)) for v in values.values()) if values else 1.0
    im = None
    for ax, (label, v) in zip(axes[0], values.items(), strict=True):
        im = ax.imshow(v, cmap="viridis", vmin=0, vmax=vmax, aspect="auto", origin="lower")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
    if im is not None:
        fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label=axis_label(metric))
    return _finish(fig, path, stamp)


def grouped_bars(groups: Sequence[str], series: dict[str, np.ndarray], path: Path, *,
                 metric: str, title: str, stamp: str | None = None) -> Path:
    """Grouped bars: one group per category (style, feature type), one bar per series."""
    fig, ax = plt.subplots(figsize=(max(5.0, 0.55 * len(groups) * max(1, len(series)) / 2),
                                    3.6))
    width = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    for i, (label, vals) in enumerate(series.items()):
        ax.bar(x + i * width - 0.4 + width / 2, vals, width, label=label,
               color=MODEL_COLORS.get(label.split("/")[0]))
    ax.set_xticks(x, groups, rotation=35, ha="right", fontsize=7)
    ax.set_ylabel(axis_label(metric))
    ax.legend(fontsize=7, ncol=3)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title, fontsize=10)
    return _finish(fig, path, stamp)
