"""A WikiChurches dataset folder: annotated images, the full image set, style labels, splits.

Layout (SPEC R3.1)::

    root/images/<QID>_wd<k>.jpg     the photos (only ``*_wd0`` — a church's first image — is used)
    root/building_parts.json        expert boxes for the annotated subset (139 images)
    root/churches.json              per church: name, styles, ... (labels for the full set)

Image ids are file names (``Q18785543_wd0.jpg``), as in ``building_parts.json``; the church's
QID is the part before the first underscore.

Two label sources (SPEC R3.4): an annotated image's own ``styles`` in building_parts.json
(`ImageAnnotation.style_label`), and, for the full dataset, its church's ``styles`` in
churches.json (`FullImage.style_label`). Both use the first-style rule by default.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ssl_jax.core.errors import MissingFileError, UserError
from ssl_jax.core.styles import NUM_STYLES, STYLE_NAMES, style_label, style_labels
from ssl_jax.core.validate import OptionError
from ssl_jax.io.atomic import write_json_atomic
from ssl_jax.io.dataset.annotations import (
    AnnotationError,
    BuildingParts,
    Clamp,
    FeatureType,
    ImageAnnotation,
    Problem,
    _Collector,
    _describe,
    _loads,
    load_building_parts,
)
from ssl_jax.io.images import open_rgb

IMAGE_PATTERN = "Q*_wd0.jpg"
PRIMARY_POLICY = "random_stratified_excluding_annotated_eval"
EXPLORATORY_POLICY = "annotated_eval_validation"


def qid_of(image_id: str) -> str:
    """``"Q18785543_wd0.jpg"`` → ``"Q18785543"``."""
    return Path(image_id).name.split("_")[0]


@dataclass(frozen=True)
class Church:
    """One churches.json entry (only ``styles`` is used by the study)."""

    qid: str
    name: str | None
    styles: tuple[str, ...]
    built_year: Any = None
    country: Mapping[str, Any] | None = None
    location: Mapping[str, Any] | None = None

    @property
    def style_label(self) -> int | None:
        return style_label(self.styles)

    @property
    def style_labels(self) -> tuple[int, ...]:
        return style_labels(self.styles)


def parse_churches(data: Mapping[str, Any] | str | bytes, *, lenient: bool = False,
                   source: str = "") -> tuple[dict[str, Church], tuple[Problem, ...]]:
    """churches.json content → (QID → Church, problems). Strict mode raises `AnnotationError`."""
    col = _Collector(source)
    if isinstance(data, (str, bytes)):
        data = _loads(data, source, col)
    if not isinstance(data, Mapping):
        raise AnnotationError([Problem(source, None, "", f"expected a JSON object keyed by QID, "
                                       f"got {_describe(data)}")])
    out: dict[str, Church] = {}
    for qid, entry in data.items():
        if not isinstance(entry, Mapping):
            col.add(None, qid, f"expected an object, got {_describe(entry)}")
            continue
        styles = entry.get("styles", [])
        if styles is None:
            styles = []
        if not isinstance(styles, list) or not all(isinstance(s, str) for s in styles):
            col.add(None, f"{qid}.styles", f"expected a list of style QIDs, got {styles!r}"[:160])
            continue
        name = entry.get("name")
        out[qid] = Church(qid, name if isinstance(name, str) else None, tuple(styles),
                          entry.get("built_year"), entry.get("country"), entry.get("location"))
    if col.problems and not lenient:
        raise AnnotationError(col.problems)
    return out, tuple(col.problems)


def load_churches(path: str | Path, *, lenient: bool = False) -> dict[str, Church]:
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"churches file {path} not found")
    return parse_churches(path.read_bytes(), lenient=lenient, source=str(path))[0]


def discover_images(root: str | Path, pattern: str = IMAGE_PATTERN) -> list[Path]:
    """Sorted image files under ``root/images`` (or ``root`` itself if it has no images/)."""
    root = Path(root)
    folder = root / "images" if (root / "images").is_dir() else root
    if not folder.is_dir():
        raise MissingFileError(f"image folder {folder} not found")
    return sorted((p for p in folder.glob(pattern) if p.is_file()), key=lambda p: p.name)


def load_image(path: str | Path, *, orientation: str = "stored"):
    """A PIL RGB image (decoded now) by the one loader's rules (`ssl_jax.io.images`)."""
    return open_rgb(path, orientation=orientation)


@dataclass(frozen=True)
class FullImage:
    """One image of the full dataset with its church's style label (first-style rule)."""

    image_id: str
    path: Path
    qid: str
    styles: tuple[str, ...]
    style_label: int | None


@dataclass(frozen=True)
class WikiChurches:
    """A loaded dataset folder. Annotations are sorted by image id and carry their file paths."""

    root: Path
    building_parts: BuildingParts | None
    churches: dict[str, Church] | None
    problems: tuple[Problem, ...] = field(default=())

    @property
    def annotations(self) -> dict[str, ImageAnnotation]:
        return {} if self.building_parts is None else self.building_parts.images

    @property
    def features(self) -> tuple[FeatureType, ...] | None:
        return None if self.building_parts is None else self.building_parts.features

    @property
    def annotated_ids(self) -> list[str]:
        return list(self.annotations)

    def annotated(self) -> list[ImageAnnotation]:
        """The annotated subset, sorted by image id (the evaluation set)."""
        return list(self.annotations.values())

    def iter_annotated(self) -> Iterator[tuple[ImageAnnotation, Any]]:
        """(annotation, PIL RGB image) for every annotated image, in id order."""
        for a in self.annotated():
            yield a, load_image(a.path)

    def images(self, *, labeled_only: bool = False) -> list[FullImage]:
        """The full dataset: sorted ``images/Q*_wd0.jpg``, labelled from churches.json."""
        if self.churches is None:
            raise MissingFileError(f"dataset {self.root} has no churches.json (needed for the "
                                   "style labels of the full dataset)")
        out = []
        for p in discover_images(self.root):
            church = self.churches.get(qid_of(p.name))
            styles = church.styles if church else ()
            item = FullImage(p.name, p, qid_of(p.name), styles, style_label(styles))
            if item.style_label is not None or not labeled_only:
                out.append(item)
        return out

    def iter_images(self, *, labeled_only: bool = False) -> Iterator[tuple[FullImage, Any]]:
        for item in self.images(labeled_only=labeled_only):
            yield item, load_image(item.path)


def load_dataset(root: str | Path, *, lenient: bool = False, clamp: Clamp = "clip",
                 require_churches: bool = False) -> WikiChurches:
    """Load a dataset folder: parse building_parts.json (and churches.json if present) and
    check every annotated image file exists. Problems raise `AnnotationError` naming the image
    and field, or with ``lenient=True`` are skipped and listed in ``.problems``."""
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"dataset folder {root} not found (download it with "
                               "`ssl-jax download`, or use ssl_jax.io.dataset.sample_dataset())")
    bp_path = root / "building_parts.json"
    if not bp_path.is_file():
        raise MissingFileError(f"dataset {root} has no building_parts.json")
    bp = load_building_parts(bp_path, lenient=lenient, clamp=clamp)
    problems = list(bp.problems)
    images: dict[str, ImageAnnotation] = {}
    folder = root / "images"
    missing: list[Problem] = []
    for image_id in sorted(bp.images):
        path = folder / image_id
        if not path.is_file():
            missing.append(Problem(str(path), image_id, "", "image file not found (it is listed in "
                                   "building_parts.json)"))
            continue
        images[image_id] = bp.images[image_id].with_path(path)
    if missing and not lenient:
        raise AnnotationError(missing)
    problems += missing
    churches = None
    ch_path = root / "churches.json"
    if ch_path.is_file():
        churches, ch_problems = parse_churches(ch_path.read_bytes(), lenient=lenient,
                                               source=str(ch_path))
        problems += ch_problems
    elif require_churches:
        raise MissingFileError(f"dataset {root} has no churches.json")
    bp = BuildingParts(images, bp.features, bp.problems, bp.source)
    return WikiChurches(root, bp, churches, tuple(problems))


# --------------------------------------------------------------------------------------------
# fine-tuning split (SPEC R3.6)


def stratified_split(image_ids: Sequence[str], labels: Sequence[int], *, seed: int = 42,
                     val_fraction: float = 0.2) -> tuple[list[str], list[str]]:
    """The original's per-class split: classes in first-seen order, one ``random.Random(seed)``
    shuffling each class's ids in turn; ``n_val = max(1, int(n * val_fraction))`` first ids
    go to validation. Returns (train ids, val ids) in that class-by-class order."""
    if len(image_ids) != len(labels):
        raise ValueError(f"{len(image_ids)} image ids but {len(labels)} labels")
    if not 0 < val_fraction < 1:
        raise OptionError(f"val_fraction must be in (0, 1), got {val_fraction}")
    by_label: dict[int, list[str]] = {}
    for i, y in zip(image_ids, labels, strict=True):
        by_label.setdefault(y, []).append(i)
    rng = random.Random(seed)
    train: list[str] = []
    val: list[str] = []
    for ids in by_label.values():
        rng.shuffle(ids)
        n_val = max(1, int(len(ids) * val_fraction))
        val += ids[:n_val]
        train += ids[n_val:]
    return train, val


@dataclass(frozen=True)
class Split:
    """The fine-tuning split artifact (the original's fields, plus ``val_fraction``)."""

    split_id: str
    experiment_id: str
    seed: int
    dataset_root: str
    dataset_version_hint: dict[str, Any]
    policy: str
    exclude_annotated_from_train: bool
    exclude_annotated_from_val: bool
    annotated_eval_image_ids: list[str]
    train_image_ids: list[str]
    val_image_ids: list[str]
    train_class_counts: dict[str, int]
    val_class_counts: dict[str, int]
    created_at: str
    val_fraction: float = 0.2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> Path:
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Split:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        names = set(cls.__dataclass_fields__)
        missing = [k for k in names - {"val_fraction"} if k not in data]
        if missing:
            raise UserError(f"split file {path}: missing keys {sorted(missing)}")
        return cls(**{k: v for k, v in data.items() if k in names})


def dataset_version_hint(root: str | Path) -> dict[str, Any]:
    """What identifies a dataset copy: image count and size + sha256 of the two JSON files."""
    root = Path(root)
    hint: dict[str, Any] = {"num_images": len(discover_images(root)) if (root / "images").is_dir() else 0}
    for name in ("building_parts.json", "churches.json"):
        p = root / name
        if p.is_file():
            hint[name] = {"bytes": p.stat().st_size,
                          "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
    return hint


def _counts(labels: Sequence[int]) -> dict[str, int]:
    counts = dict.fromkeys(STYLE_NAMES, 0)
    for y in labels:
        counts[STYLE_NAMES[y]] += 1
    return counts


def make_split(
    dataset: WikiChurches, *, seed: int = 42, val_fraction: float = 0.2,
    policy: str = PRIMARY_POLICY, experiment_id: str = "ssl_jax", split_id: str | None = None,
    created_at: str | None = None,
) -> Split:
    """Train/val split of the labelled full dataset (churches.json labels, first-style rule).

    PRIMARY_POLICY: every annotated image is excluded from both sets; the rest is split per
    class by `stratified_split`. EXPLORATORY_POLICY: val = the labelled annotated images,
    train = every other labelled image (the original's leaky ``--val-on-annotated-eval``).
    """
    items = dataset.images(labeled_only=True)
    label = {it.image_id: it.style_label for it in items}
    annotated = set(dataset.annotated_ids)
    if policy == PRIMARY_POLICY:
        pool = [it for it in items if it.image_id not in annotated]
        train, val = stratified_split([it.image_id for it in pool],
                                      [it.style_label for it in pool], seed=seed,
                                      val_fraction=val_fraction)
        excl_val, scope = True, "primary"
    elif policy == EXPLORATORY_POLICY:
        train = [it.image_id for it in items if it.image_id not in annotated]
        val = [it.image_id for it in items if it.image_id in annotated]
        excl_val, scope = False, "exploratory"
    else:
        raise ValueError(f"policy must be {PRIMARY_POLICY!r} or {EXPLORATORY_POLICY!r}, got {policy!r}")
    if not train or not val:
        raise UserError(f"split of {dataset.root} under {policy!r} leaves {len(train)} train and "
                        f"{len(val)} val images ({len(items)} labelled, {len(annotated)} annotated)")
    assert all(label[i] is not None and 0 <= label[i] < NUM_STYLES for i in train + val)
    return Split(
        split_id=split_id or f"{experiment_id}__{scope}__seed{seed}", experiment_id=experiment_id,
        seed=seed, dataset_root=str(dataset.root), dataset_version_hint=dataset_version_hint(dataset.root),
        policy=policy, exclude_annotated_from_train=True, exclude_annotated_from_val=excl_val,
        annotated_eval_image_ids=sorted(annotated), train_image_ids=train, val_image_ids=val,
        train_class_counts=_counts([label[i] for i in train]),
        val_class_counts=_counts([label[i] for i in val]),
        created_at=created_at or datetime.now(UTC).isoformat(), val_fraction=val_fraction)
