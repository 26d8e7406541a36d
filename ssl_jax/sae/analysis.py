"""What SAE features mean: spatial maps scored against expert boxes, feature–label
correlation with Benjamini–Hochberg FDR, monosemanticity, tiered selection.

Everything is vectorised over features (chunks of `chunk` features at a time in JAX), so
tens of thousands of features cost a few matrix products.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from ssl_jax.attention.heatmap import to_heatmap
from ssl_jax.metrics import coverage, iou, pointing_hit
from ssl_jax.metrics.masks import union_mask
from ssl_jax.sae.model import SAE
from ssl_jax.stats import benjamini_hochberg

# ---- feature activations ---------------------------------------------------------------------


def feature_maps(sae: SAE, patches, grid: tuple[int, int], features=None,
                 batch: int = 8) -> np.ndarray:
    """SAE codes of every patch token as maps (N, F', gh, gw) (`features`: the F' to keep)."""
    patches = np.asarray(patches, np.float32)
    n, p, d = patches.shape
    if p != grid[0] * grid[1]:
        raise ValueError(f"{p} patch tokens do not fill a {grid} grid")
    sel = None if features is None else jnp.asarray(np.asarray(features, np.int32))
    out = []
    for i in range(0, n, batch):
        f = sae.encode(patches[i:i + batch].reshape(-1, d))
        if sel is not None:
            f = f[:, sel]
        out.append(np.asarray(f).reshape(-1, p, f.shape[-1]))
    maps = np.concatenate(out)  # (N, P, F')
    return maps.transpose(0, 2, 1).reshape(n, -1, *grid)


def image_activations(sae: SAE, acts, pool: str = "mean", batch: int = 8) -> np.ndarray:
    """One activation per (image, feature) (N, F): "mean"/"max" over patch tokens, or "cls"."""
    if pool == "cls":
        if acts.cls is None:
            raise ValueError("pool='cls' needs a CLS token")
        return np.asarray(sae.encode(acts.cls))
    patches = np.asarray(acts.patches, np.float32)
    n, p, d = patches.shape
    red = {"mean": jnp.mean, "max": jnp.max}[pool]
    out = [np.asarray(red(sae.encode(patches[i:i + batch].reshape(-1, d))
                          .reshape(-1, p, sae.num_features), axis=1))
           for i in range(0, n, batch)]
    return np.concatenate(out)


def spectrum_examples(values, n: int = 4) -> dict[str, np.ndarray]:
    """Dataset examples across one feature's activation spectrum, `n` each: "max", "min",
    "slightly_positive" (smallest values > 0) and "slightly_negative" (largest values < 0;
    empty for ReLU codes, filled for signed activations such as residual channels)."""
    v = np.asarray(values, np.float64)
    order = np.argsort(-v, kind="stable")
    pos, neg = np.flatnonzero(v > 0), np.flatnonzero(v < 0)
    return {"max": order[:n], "min": order[::-1][:n],
            "slightly_positive": pos[np.argsort(v[pos], kind="stable")][:n],
            "slightly_negative": neg[np.argsort(-v[neg], kind="stable")][:n]}


# ---- spatial scoring -------------------------------------------------------------------------


@dataclass
class SpatialScores:
    features: np.ndarray     # (F',) feature indices
    type_labels: np.ndarray  # (T,) annotation label ids
    iou: np.ndarray          # (F', T) mean IoU@percentile over images with that type (nan: none)
    coverage: np.ndarray     # (F', T)
    pointing: np.ndarray     # (F', T)
    count: np.ndarray        # (T,) images with that type

    def best(self, metric: str = "iou", k: int = 10) -> list[tuple[int, int, float]]:
        """Top (feature, type label, score) pairs by `metric`."""
        m = np.nan_to_num(getattr(self, metric), nan=-np.inf)
        flat = np.argsort(-m, axis=None, kind="stable")[:k]
        fi, ti = np.unravel_index(flat, m.shape)
        return [(int(self.features[a]), int(self.type_labels[b]), float(m[a, b]))
                for a, b in zip(fi, ti, strict=True)]


def type_masks(annotations: Sequence, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Per image and annotation label, the union of that label's boxes: (N, T, H, W) bool and
    the labels (T,). Boxes are normalised, so the squash frame is just (H, W)."""
    labels = sorted({int(lb) for a in annotations for lb in np.asarray(a.labels).ravel()})
    out = np.zeros((len(annotations), len(labels), *size), bool)
    for i, a in enumerate(annotations):
        lab = np.asarray(a.labels).ravel()
        for j, lb in enumerate(labels):
            boxes = np.asarray(a.boxes)[lab == lb]
            if len(boxes):
                out[i, j] = union_mask(boxes, size)
    return out, np.asarray(labels, np.int64)


def score_features(maps, masks, labels, features=None, *, size: tuple[int, int] = (112, 112),
                   percentile: float = 90) -> SpatialScores:
    """Score feature maps (N, F', gh, gw) against per-type masks (N, T, H, W): for every
    feature and type, mean IoU@percentile, coverage and pointing over the images that contain
    that type (maps upsampled to `size` = the masks' size, min-max normalised)."""
    maps = np.asarray(maps, np.float32)
    masks = np.asarray(masks, bool)
    n, nf = maps.shape[:2]
    if masks.shape[-2:] != tuple(size):
        raise ValueError(f"masks are {masks.shape[-2:]}, expected {size}")
    present = masks.any(axis=(-2, -1))  # (N, T)
    sums = {k: np.zeros((nf, masks.shape[1])) for k in ("iou", "coverage", "pointing")}
    # a feature silent on an image gives a degenerate (constant) map: NaN in every metric
    # (ssl_jax.metrics.degenerate), left out of that feature's mean rather than scored 0
    used = np.zeros((nf, masks.shape[1]))
    for i in range(n):
        h = to_heatmap(jnp.asarray(maps[i]), size)[:, None]  # (F', 1, H, W)
        g = jnp.asarray(masks[i])[None]                       # (1, T, H, W)
        vals = {"iou": np.asarray(iou(h, g, percentile)), "coverage": np.asarray(coverage(h, g)),
                "pointing": np.asarray(pointing_hit(h, g))}
        ok = present[i][None] & np.isfinite(vals["iou"])
        used += ok
        for k, v in vals.items():
            sums[k] += np.where(ok, v, 0.0)
    cnt = present.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        res = {k: np.where(used > 0, v / np.maximum(used, 1), np.nan) for k, v in sums.items()}
    feats = np.arange(nf) if features is None else np.asarray(features)
    return SpatialScores(feats, np.asarray(labels), res["iou"], res["coverage"],
                         res["pointing"], cnt)


# ---- correlation -----------------------------------------------------------------------------


def _rank(x: np.ndarray) -> np.ndarray:
    return scipy.stats.rankdata(x, axis=0).astype(np.float64)


def _pearson_r(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(F, K) Pearson r of every column of x with every column of y (float64, one matmul)."""
    xc = x - x.mean(0)
    yc = y - y.mean(0)
    num = xc.T @ yc
    den = np.sqrt(np.sum(xc * xc, 0))[:, None] * np.sqrt(np.sum(yc * yc, 0))[None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


@dataclass
class Correlation:
    r: np.ndarray   # (F, K)
    p: np.ndarray   # (F, K) two-sided
    q: np.ndarray   # (F, K) BH-adjusted over all finite entries
    significant: np.ndarray  # q < alpha
    method: str


def correlate(acts, targets, *, method: str = "pearson", alpha: float = 0.05) -> Correlation:
    """Correlation of every feature (columns of acts (N, F)) with every target (N,) or (N, K),
    two-sided p from the t distribution with N-2 df (as scipy.stats.pearsonr / spearmanr),
    BH-FDR over all (feature, target) pairs. Constant columns give nan (not tested)."""
    x = np.asarray(acts, np.float64)
    y = np.asarray(targets, np.float64)
    y = y[:, None] if y.ndim == 1 else y
    if method == "spearman":
        x, y = _rank(x), _rank(y)
    elif method != "pearson":
        raise ValueError(f"method must be 'pearson' or 'spearman', got {method!r}")
    n = x.shape[0]
    r = np.clip(_pearson_r(x, y), -1.0, 1.0)
    df = n - 2
    with np.errstate(divide="ignore", invalid="ignore"):
        t = r * np.sqrt(df / ((1.0 - r) * (1.0 + r)))
    p = 2.0 * scipy.stats.t.sf(np.abs(t), df)
    p = np.where(np.isfinite(r), np.where(np.abs(r) >= 1.0, 0.0, p), np.nan)
    q = benjamini_hochberg(p.ravel()).reshape(p.shape)
    return Correlation(r, p, q, np.where(np.isfinite(q), q < alpha, False), method)


def label_matrix(labels: Sequence[int | None], classes: Sequence[int] | None = None):
    """One-vs-rest indicator targets (N, C) from class labels (None → all zeros)."""
    classes = sorted({int(c) for c in labels if c is not None}) if classes is None else classes
    y = np.array([[float(lb == c) for c in classes] for lb in labels])
    return y, np.asarray(classes)


# ---- monosemanticity -------------------------------------------------------------------------


def _normalise_rows(e):
    e = np.asarray(e, np.float32)
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


@dataclass
class Calibration:
    mean: float   # mean cosine similarity of random (distinct) image pairs
    std: float

    def thresholds(self) -> dict[str, float]:
        return {"+1sd": self.mean + self.std, "+2sd": self.mean + 2 * self.std}


def random_pair_calibration(embeddings) -> Calibration:
    """Mean and std of the cosine similarity over all distinct image pairs."""
    e = _normalise_rows(embeddings)
    s = e @ e.T
    iu = np.triu_indices(len(e), 1)
    v = s[iu].astype(np.float64)
    return Calibration(float(v.mean()), float(v.std()))


def monosemanticity(acts, embeddings, top_n: int = 10, chunk: int = 1024) -> np.ndarray:
    """Per feature k: Σ_{i<j} w_i w_j cos(e_i, e_j) / Σ_{i<j} w_i w_j over its top-n images
    by activation, with w = the feature's activations min-max normalised over all images.
    acts (N, F), embeddings (N, E) from an independent encoder. nan where all weights are 0."""
    a = np.asarray(acts, np.float32)
    n, nf = a.shape
    top_n = min(top_n, n)
    s = jnp.asarray(_normalise_rows(embeddings) @ _normalise_rows(embeddings).T)
    off = jnp.asarray(~np.eye(top_n, dtype=bool))

    @jax.jit
    def score(block):  # (N, C)
        lo, hi = block.min(0), block.max(0)
        w_all = (block - lo) / jnp.where(hi > lo, hi - lo, 1.0)
        w_top, idx = jax.lax.top_k(w_all.T, top_n)  # (C, n)
        sim = s[idx[:, :, None], idx[:, None, :]]    # (C, n, n)
        ww = w_top[:, :, None] * w_top[:, None, :] * off
        den = ww.sum((1, 2))
        return jnp.where(den > 0, (ww * sim).sum((1, 2)) / jnp.where(den > 0, den, 1.0),
                         jnp.nan)

    return np.concatenate([np.asarray(score(jnp.asarray(a[:, i:i + chunk])))
                           for i in range(0, nf, chunk)])


def select_tiers(corr: Correlation, mono: np.ndarray, threshold: float,
                 top: int = 20) -> dict[str, np.ndarray]:
    """Tiered feature selection: "both" (significant for some target and monosemanticity ≥
    threshold), "either" (one of the two), "most_monosemantic" (top `top` by score)."""
    sig = corr.significant.any(axis=1)
    mono_ok = np.nan_to_num(mono, nan=-np.inf) >= threshold
    order = np.argsort(-np.nan_to_num(mono, nan=-np.inf), kind="stable")
    return {"both": np.flatnonzero(sig & mono_ok), "either": np.flatnonzero(sig | mono_ok),
            "most_monosemantic": order[:top]}
