"""Parse WikiChurches ``building_parts.json``: the feature ontology and the expert boxes.

Layout (SPEC R3.2)::

    {"meta": [{"name": "Apse", "parents": []}, ...],          # feature type i = meta[i]
     "annotations": {"Q18785543_wd0.jpg": {
         "styles": ["Q46261"],
         "bbox_groups": [{"group_label": 83,
                          "elements": [{"left": 0.45, "top": 0.54, "width": 0.03,
                                        "height": 0.12, "label": 83}, ...]}, ...]}, ...}}

Coordinates are fractions of the original image width/height, origin top-left. Every element
of every group becomes one box, carrying its own (element) label and its group's label; a
group is a composite feature and the two labels may differ. Missing ``styles``,
``bbox_groups`` or ``elements`` mean empty; other keys are ignored.

Boxes are kept as ``(K, 4)`` float64 arrays of normalised ``(left, top, right, bottom)``:

- ``clamp="clip"`` (default, SPEC decision 7): the box is clipped to the image — a negative
  left/top becomes 0 and right/bottom stay where they were (``min(left + width, 1)``).
- ``clamp="original"``: the original study's rule — a negative left/top is set to 0 *without*
  shrinking the box, so ``right = min(width, 1)`` (the box shifts right/down).

Bad input raises `AnnotationError`, whose message names the file, the image id and the field
(``bbox_groups[1].elements[0].left``) of every problem found; ``lenient=True`` instead skips
the faulty element, group or image and returns the problems alongside what could be read.
Malformed JSON, a missing ``annotations`` object and a malformed ``meta`` are always errors.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ssl_jax.core.errors import MissingFileError, UserError
from ssl_jax.core.styles import style_label as _style_label
from ssl_jax.core.styles import style_labels as _style_labels
from ssl_jax.metrics.masks import rasterize, union_mask

Clamp = Literal["clip", "original"]
COORD_KEYS = ("left", "top", "width", "height")
_MAX_LISTED = 25  # problems spelled out in an error message


@dataclass(frozen=True)
class FeatureType:
    """Architectural feature type ``index`` of the ontology (``meta[index]``)."""

    index: int
    name: str
    parents: tuple[int, ...] = ()


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input: where (file, image id, field) and what."""

    source: str
    image_id: str | None
    field: str
    message: str

    def __str__(self) -> str:
        where = [self.source] if self.source else []
        if self.image_id is not None:
            where.append(f"image {self.image_id}")
        if self.field:
            where.append(self.field)
        return ": ".join([*where, self.message])


class AnnotationError(UserError):
    """Invalid annotation data; ``.problems`` lists every problem found."""

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]):
        self.problems = tuple(problems)
        lines = [str(p) for p in self.problems[:_MAX_LISTED]]
        if len(self.problems) > _MAX_LISTED:
            lines.append(f"... and {len(self.problems) - _MAX_LISTED} more problems")
        head = lines[0] if len(lines) == 1 else f"{len(self.problems)} problems:\n  " + "\n  ".join(lines)
        super().__init__(head)


@dataclass(frozen=True, eq=False)
class ImageAnnotation:
    """One annotated image: its id, styles and K expert boxes as arrays.

    boxes: (K, 4) float64, normalised (left, top, right, bottom) after the clamp rule.
    xywh: (K, 4) float64, (left, top, width, height) exactly as written in the file.
    labels / group_labels: (K,) int32 element and group feature labels.
    group_ids: (K,) int32 position of each box's group in the image's ``bbox_groups``.
    path: the image file, once a dataset loader has located it (else None).
    """

    image_id: str
    styles: tuple[str, ...]
    boxes: np.ndarray
    labels: np.ndarray
    group_labels: np.ndarray
    group_ids: np.ndarray
    xywh: np.ndarray
    clamp: Clamp = "clip"
    path: Path | None = None

    @property
    def num_boxes(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def qid(self) -> str:
        """The church's Wikidata id: the file name up to the first underscore."""
        return self.image_id.split("_")[0]

    @property
    def style_label(self) -> int | None:
        """Class index of the FIRST listed style (None if it is not one of the four)."""
        return _style_label(self.styles)

    @property
    def style_labels(self) -> tuple[int, ...]:
        """Every mapped style's class index (the all-styles rule for breakdowns)."""
        return _style_labels(self.styles)

    def masks(self, frame) -> np.ndarray:
        """(K, H, W) bool box masks in `frame`: (H, W) or a preprocessing Transform."""
        return rasterize(self.boxes, frame)

    def union_mask(self, frame) -> np.ndarray:
        """(H, W) bool union of all boxes in `frame` (all False when there are no boxes)."""
        return union_mask(self.boxes, frame)

    def with_path(self, path: Path | None) -> ImageAnnotation:
        return replace(self, path=path)


@dataclass(frozen=True)
class BuildingParts:
    """A parsed ``building_parts.json``: images (file order), ontology, and skipped problems."""

    images: dict[str, ImageAnnotation]
    features: tuple[FeatureType, ...] | None
    problems: tuple[Problem, ...] = field(default=())
    source: str = ""

    @property
    def num_boxes(self) -> int:
        return sum(a.num_boxes for a in self.images.values())

    def feature_name(self, label: int) -> str:
        if self.features is None:
            raise UserError(f"{self.source or 'annotations'} has no 'meta' ontology")
        return self.features[label].name


# --------------------------------------------------------------------------------------------
# parsing


def _describe(v: Any) -> str:
    text = json.dumps(v) if isinstance(v, (str, int, float, bool, type(None))) else type(v).__name__
    return f"{text[:40]} ({type(v).__name__})"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class _Collector:
    def __init__(self, source: str):
        self.source = source
        self.problems: list[Problem] = []

    def add(self, image_id: str | None, fld: str, message: str) -> None:
        self.problems.append(Problem(self.source, image_id, fld, message))


def parse_feature_types(meta: Any, source: str = "") -> tuple[FeatureType, ...]:
    """The ``meta`` array → FeatureType per index; errors (always fatal) name the entry."""
    col = _Collector(source)
    if not isinstance(meta, list):
        raise AnnotationError([Problem(source, None, "meta", f"expected a list, got {_describe(meta)}")])
    out = []
    for i, entry in enumerate(meta):
        f = f"meta[{i}]"
        if not isinstance(entry, Mapping):
            col.add(None, f, f"expected an object, got {_describe(entry)}")
            continue
        name = entry.get("name")
        if not isinstance(name, str):
            col.add(None, f + ".name", "missing key 'name'" if "name" not in entry
                    else f"expected a string, got {_describe(name)}")
            continue
        parents = entry.get("parents", [])
        if not isinstance(parents, list) or not all(_is_int(p) and 0 <= p < len(meta) for p in parents):
            col.add(None, f + ".parents",
                    f"expected a list of feature indices in 0..{len(meta) - 1}, got {parents!r}"[:160])
            continue
        out.append(FeatureType(i, name, tuple(parents)))
    if col.problems:
        raise AnnotationError(col.problems)
    return tuple(out)


def _parse_element(elem: Any, where: str, image_id: str, n_features: int | None,
                   col: _Collector) -> tuple[float, float, float, float, int] | None:
    if not isinstance(elem, Mapping):
        col.add(image_id, where, f"expected an object, got {_describe(elem)}")
        return None
    ok = True
    coords: list[float] = []
    for k in COORD_KEYS:
        if k not in elem:
            col.add(image_id, f"{where}.{k}", f"missing key '{k}'")
            ok = False
            continue
        v = elem[k]
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            col.add(image_id, f"{where}.{k}", f"expected a number, got {_describe(v)}")
            ok = False
        elif not math.isfinite(v):
            col.add(image_id, f"{where}.{k}", f"expected a finite number, got {v}")
            ok = False
        else:
            coords.append(float(v))
    if "label" not in elem:
        col.add(image_id, f"{where}.label", "missing key 'label'")
        ok = False
    elif not _label_ok(elem["label"], f"{where}.label", image_id, n_features, col):
        ok = False
    if not ok:
        return None
    left, top, width, height = coords
    if width <= 0 or height <= 0:
        kind = "zero-area" if width == 0 or height == 0 else "negative-size"
        col.add(image_id, where, f"{kind} box (width {width:g}, height {height:g})")
        return None
    if left >= 1 or top >= 1 or left + width <= 0 or top + height <= 0:
        col.add(image_id, where, "box lies wholly outside the image (left, top, right, bottom = "
                f"{left:g}, {top:g}, {left + width:g}, {top + height:g}; the image is [0, 1] x [0, 1])")
        return None
    return left, top, width, height, int(elem["label"])


def _label_ok(v: Any, where: str, image_id: str, n_features: int | None, col: _Collector) -> bool:
    if not _is_int(v):
        col.add(image_id, where, f"expected an integer feature label, got {_describe(v)}")
        return False
    if v < 0 or (n_features is not None and v >= n_features):
        rng = f"0..{n_features - 1}" if n_features is not None else "non-negative"
        col.add(image_id, where, f"unknown feature label {v} (expected {rng})")
        return False
    return True


def _bad_image_id(image_id: str) -> str | None:
    if not image_id or image_id.strip() != image_id:
        return "image id must be a non-empty file name without surrounding spaces"
    if "/" in image_id or "\\" in image_id or image_id in (".", "..") or "\x00" in image_id:
        return "image id must be a plain file name (no folders)"
    return None


def _clamped(xywh: np.ndarray, clamp: Clamp) -> np.ndarray:
    left, top, width, height = (xywh[:, i] for i in range(4))
    if clamp == "clip":
        right, bottom = left + width, top + height
    elif clamp == "original":  # left/top set to 0 without shrinking the box
        right = np.where(left < 0, 0.0, left) + width
        bottom = np.where(top < 0, 0.0, top) + height
    else:
        raise ValueError(f"clamp must be 'clip' or 'original', got {clamp!r}")
    return np.stack([np.maximum(left, 0.0), np.maximum(top, 0.0),
                     np.minimum(right, 1.0), np.minimum(bottom, 1.0)], axis=-1)


def _parse_image(image_id: str, ann: Any, n_features: int | None, clamp: Clamp,
                 col: _Collector) -> ImageAnnotation | None:
    bad = _bad_image_id(image_id)
    if bad:
        col.add(image_id, "", bad)
        return None
    if not isinstance(ann, Mapping):
        col.add(image_id, "", f"expected an object, got {_describe(ann)}")
        return None
    styles = ann.get("styles", [])
    if not isinstance(styles, list) or not all(isinstance(s, str) for s in styles):
        col.add(image_id, "styles", f"expected a list of style QIDs, got {styles!r}"[:160])
        styles = []
    groups = ann.get("bbox_groups", [])
    if not isinstance(groups, list):
        col.add(image_id, "bbox_groups", f"expected a list, got {_describe(groups)}")
        groups = []
    rows: list[tuple[float, float, float, float, int]] = []
    glabels: list[int] = []
    gids: list[int] = []
    for g, group in enumerate(groups):
        gw = f"bbox_groups[{g}]"
        if not isinstance(group, Mapping):
            col.add(image_id, gw, f"expected an object, got {_describe(group)}")
            continue
        if "group_label" not in group:
            col.add(image_id, f"{gw}.group_label", "missing key 'group_label'")
            continue
        if not _label_ok(group["group_label"], f"{gw}.group_label", image_id, n_features, col):
            continue
        elements = group.get("elements", [])
        if not isinstance(elements, list):
            col.add(image_id, f"{gw}.elements", f"expected a list, got {_describe(elements)}")
            continue
        for e, elem in enumerate(elements):
            row = _parse_element(elem, f"{gw}.elements[{e}]", image_id, n_features, col)
            if row is not None:
                rows.append(row)
                glabels.append(int(group["group_label"]))
                gids.append(g)
    xywh = np.asarray([r[:4] for r in rows], np.float64).reshape(-1, 4)
    return ImageAnnotation(
        image_id=image_id, styles=tuple(styles), boxes=_clamped(xywh, clamp),
        labels=np.asarray([r[4] for r in rows], np.int32), group_labels=np.asarray(glabels, np.int32),
        group_ids=np.asarray(gids, np.int32), xywh=xywh, clamp=clamp)


def _loads(text: str | bytes, source: str, col: _Collector) -> Any:
    dups: list[str] = []

    def pairs(items):
        seen: dict[str, Any] = {}
        for k, v in items:
            if k in seen:
                dups.append(k)
            seen[k] = v
        return seen

    try:
        data = json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as e:
        raise AnnotationError([Problem(source, None, "", f"malformed JSON at line {e.lineno} "
                                       f"column {e.colno}: {e.msg}")]) from None
    except UnicodeDecodeError as e:
        raise AnnotationError([Problem(source, None, "", f"not UTF-8 text ({e.reason})")]) from None
    for k in dict.fromkeys(dups):
        col.add(k if k.endswith((".jpg", ".jpeg", ".png")) else None, "",
                f"duplicate key {k!r} (the last one would win)")
    return data


def parse_building_parts(
    data: Mapping[str, Any] | str | bytes, *, lenient: bool = False, clamp: Clamp = "clip",
    source: str = "",
) -> BuildingParts:
    """Parse building_parts content (a decoded mapping, or JSON text) — see the module docstring.

    Strict (default): every problem is collected and one `AnnotationError` lists them all.
    ``lenient=True``: faulty elements/groups/images are skipped and listed in ``.problems``.
    """
    if clamp not in ("clip", "original"):
        raise ValueError(f"clamp must be 'clip' or 'original', got {clamp!r}")
    col = _Collector(source)
    if isinstance(data, (str, bytes)):
        data = _loads(data, source, col)
    if not isinstance(data, Mapping):
        raise AnnotationError([Problem(source, None, "", "expected a JSON object with keys 'meta' "
                                       f"and 'annotations', got {_describe(data)}")])
    if "annotations" not in data:
        raise AnnotationError([Problem(source, None, "annotations", "missing key 'annotations'")])
    anns = data["annotations"]
    if not isinstance(anns, Mapping):
        raise AnnotationError([Problem(source, None, "annotations",
                                       f"expected an object keyed by image id, got {_describe(anns)}")])
    features = parse_feature_types(data["meta"], source) if "meta" in data else None
    n_features = None if features is None else len(features)
    images: dict[str, ImageAnnotation] = {}
    for image_id, ann in anns.items():
        parsed = _parse_image(str(image_id), ann, n_features, clamp, col)
        if parsed is not None:
            images[parsed.image_id] = parsed
    if col.problems and not lenient:
        raise AnnotationError(col.problems)
    return BuildingParts(images, features, tuple(col.problems), source)


def load_building_parts(path: str | Path, *, lenient: bool = False,
                        clamp: Clamp = "clip") -> BuildingParts:
    """Read and parse a ``building_parts.json`` file (see `parse_building_parts`)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"annotation file {path} not found")
    return parse_building_parts(path.read_bytes(), lenient=lenient, clamp=clamp, source=str(path))


def load_annotations(path: str | Path, *, lenient: bool = False,
                     clamp: Clamp = "clip") -> dict[str, ImageAnnotation]:
    """image id → ImageAnnotation (the original's ``load_annotations``)."""
    return load_building_parts(path, lenient=lenient, clamp=clamp).images


def load_annotations_with_features(
    path: str | Path, *, lenient: bool = False, clamp: Clamp = "clip",
) -> tuple[dict[str, ImageAnnotation], tuple[FeatureType, ...]]:
    """(image id → ImageAnnotation, feature types); here ``meta`` is required."""
    bp = load_building_parts(path, lenient=lenient, clamp=clamp)
    if bp.features is None:
        raise AnnotationError([Problem(str(path), None, "meta", "missing key 'meta'")])
    return bp.images, bp.features
