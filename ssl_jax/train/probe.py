"""Linear probe on frozen features (SPEC R5.1): StandardScaler → LogisticRegression (lbfgs,
L2, C = 1, max_iter 1000), stratified 5-fold cross-validation; then a refit on all data for
the training-set accuracy, macro-F1, confusion matrix and per-class accuracy (as the
original reports them, clearly labelled as training-set numbers here)."""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.core.batching import padded_batches
from ssl_jax.core.errors import UserError
from ssl_jax.models.model import Model
from ssl_jax.models.spec import ModelSpec
from ssl_jax.train.augment import normalize
from ssl_jax.train.heads import features


@dataclass
class ProbeResult:
    cv_accuracy: float
    cv_std: float  # numpy std over folds (ddof 0), as the original
    cv_fold_accuracies: list[float]
    cv_macro_f1: float  # macro-F1 of the out-of-fold predictions
    cv_confusion_matrix: list[list[int]]  # of the out-of-fold predictions
    train_accuracy: float
    train_macro_f1: float
    train_confusion_matrix: list[list[int]]
    per_class_train_accuracy: dict[str, float]
    num_samples: int
    num_features: int
    class_names: list[str]
    n_splits: int
    random_state: int

    def to_json(self) -> dict:
        return asdict(self)


def linear_probe(features: np.ndarray, labels: np.ndarray, *, class_names=None,
                 n_splits: int = 5, random_state: int = 42, max_iter: int = 1000) -> ProbeResult:
    """Cross-validated logistic-regression probe; labels < 0 (unlabelled) are dropped."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(features, np.float64)
    y = np.asarray(labels, np.int64)
    if x.ndim != 2 or len(x) != len(y):
        raise UserError(f"features must be (N, D) with N = len(labels); got {x.shape} and "
                         f"{y.shape}")
    keep = y >= 0
    x, y = x[keep], y[keep]
    classes = np.unique(y)
    n_classes = int(max(classes.max() + 1, len(class_names or ())))
    names = list(class_names) if class_names else [str(c) for c in range(n_classes)]
    counts = np.bincount(y, minlength=n_classes)
    smallest = counts[counts > 0].min()
    if smallest < n_splits:
        raise UserError(f"stratified {n_splits}-fold CV needs >= {n_splits} images per class; "
                         f"the smallest class has {smallest} (counts {counts.tolist()})")

    def pipe():
        return Pipeline([("scale", StandardScaler()),
                         ("clf", LogisticRegression(max_iter=max_iter, random_state=random_state))])

    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    accs, oof = [], np.zeros_like(y)
    for tr, te in folds.split(x, y):
        p = pipe().fit(x[tr], y[tr])
        pred = p.predict(x[te])
        oof[te] = pred
        accs.append(float(accuracy_score(y[te], pred)))
    full = pipe().fit(x, y)
    pred = full.predict(x)
    labels_all = list(range(n_classes))
    cm = confusion_matrix(y, pred, labels=labels_all)
    per_class = {names[c]: float(cm[c, c] / cm[c].sum()) for c in labels_all if cm[c].sum()}
    return ProbeResult(
        cv_accuracy=float(np.mean(accs)), cv_std=float(np.std(accs)), cv_fold_accuracies=accs,
        cv_macro_f1=float(f1_score(y, oof, average="macro")),
        cv_confusion_matrix=confusion_matrix(y, oof, labels=labels_all).tolist(),
        train_accuracy=float(accuracy_score(y, pred)),
        train_macro_f1=float(f1_score(y, pred, average="macro")),
        train_confusion_matrix=cm.tolist(), per_class_train_accuracy=per_class,
        num_samples=len(y), num_features=int(x.shape[1]), class_names=names,
        n_splits=n_splits, random_state=random_state)


@functools.partial(jax.jit, static_argnames=("spec", "dtype"))
def _features(params, images_u8, *, spec: ModelSpec, dtype):

    p = spec.preprocessing
    x = normalize(images_u8.astype(jnp.float32) * jnp.float32(1 / 255), p.mean, p.std)
    return jax.vmap(lambda im: features(spec, params, im, dtype=dtype))(x)


def extract_features(model: Model, images_u8: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Frozen classifier features (CLS, or pooled for SigLIP) of uint8 images already at the
    model input size, in fixed padded batches."""
    out = [np.asarray(_features(model.params, images_u8[idx], spec=model.spec,
                                dtype=model.dtype))[:k]
           for idx, k in padded_batches(np.arange(len(images_u8)), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, model.spec.hidden_size), np.float32)
