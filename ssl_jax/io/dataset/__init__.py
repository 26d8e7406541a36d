"""WikiChurches data: expert annotations, box masks in any frame, datasets, splits, download,
and the embedded sample dataset (`sample_dataset()`)."""

from pathlib import Path

from ssl_jax.core.errors import MissingFileError
from ssl_jax.core.styles import (
    NUM_STYLES,
    STYLE_MAPPING,
    STYLE_NAMES,
    STYLE_QIDS,
    style_label,
    style_labels,
    style_name,
)
from ssl_jax.io.dataset.annotations import (
    AnnotationError,
    BuildingParts,
    FeatureType,
    ImageAnnotation,
    Problem,
    load_annotations,
    load_annotations_with_features,
    load_building_parts,
    parse_building_parts,
    parse_feature_types,
)
from ssl_jax.io.dataset.folders import (
    EXPLORATORY_POLICY,
    PRIMARY_POLICY,
    Church,
    FullImage,
    Split,
    WikiChurches,
    dataset_version_hint,
    discover_images,
    load_churches,
    load_dataset,
    load_image,
    make_split,
    parse_churches,
    qid_of,
    stratified_split,
)
from ssl_jax.metrics.masks import (
    batch_edges,
    box_edges,
    boxes_to_frame,
    edges_to_masks,
    frame_size,
    pad_boxes,
    pixel_edges,
    rasterize,
    rasterize_batch,
    union_mask,
    union_masks,
)


def sample_dataset() -> Path:
    """Folder of the embedded sample dataset (WikiChurches layout: images/,
    building_parts.json, churches.json); `ssl_jax.io.dataset.make_sample` documents how it was made."""
    return Path(__file__).resolve().parent / "sample"


def dataset_root(dataset: str | Path) -> Path:
    """The folder of a dataset argument: "sample" (the embedded synthetic sample) or a
    WikiChurches root folder, which must exist."""
    if str(dataset) == "sample":
        return Path(sample_dataset())
    root = Path(dataset)
    if not root.is_dir():
        raise MissingFileError(f"dataset folder {root} does not exist (download it with "
                               "`ssl-jax download`, or use --dataset sample)")
    return root


__all__ = [
    "EXPLORATORY_POLICY",
    "NUM_STYLES",
    "PRIMARY_POLICY",
    "STYLE_MAPPING",
    "STYLE_NAMES",
    "STYLE_QIDS",
    "AnnotationError",
    "BuildingParts",
    "Church",
    "FeatureType",
    "FullImage",
    "ImageAnnotation",
    "Problem",
    "Split",
    "WikiChurches",
    "batch_edges",
    "box_edges",
    "boxes_to_frame",
    "dataset_root",
    "dataset_version_hint",
    "discover_images",
    "edges_to_masks",
    "frame_size",
    "load_annotations",
    "load_annotations_with_features",
    "load_building_parts",
    "load_churches",
    "load_dataset",
    "load_image",
    "make_split",
    "pad_boxes",
    "parse_building_parts",
    "parse_churches",
    "parse_feature_types",
    "pixel_edges",
    "qid_of",
    "rasterize",
    "rasterize_batch",
    "sample_dataset",
    "stratified_split",
    "style_label",
    "style_labels",
    "style_name",
    "union_mask",
    "union_masks",
]
