"""Which images a study runs on, from a dataset folder in the WikiChurches layout."""

from __future__ import annotations

from pathlib import Path

from ssl_jax.core.errors import UserError
from ssl_jax.io.dataset import dataset_root, load_annotations

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def image_candidates(folder: Path, image_id: str) -> list[Path]:
    """Files an image id may name: itself (ids are file names in building_parts.json) or
    the id plus an image suffix."""
    return [folder / image_id] + [folder / f"{image_id}{s}" for s in IMAGE_SUFFIXES]




def study_images(dataset: str) -> tuple[list[str], list[Path]]:
    """(image ids, paths) of the images a study extracts, in a fixed (sorted) order: the
    annotated images of building_parts.json when present, else every image in images/."""
    root = dataset_root(dataset)
    folder = root / "images"
    if not folder.is_dir():
        raise UserError(f"dataset {root} has no images/ folder")
    parts = root / "building_parts.json"
    if parts.exists():

        ids = sorted(load_annotations(parts))
        if not ids:
            raise UserError(f"{parts} annotates no image: nothing to extract or evaluate")
        paths = []
        for i in ids:
            found = [p for p in image_candidates(folder, i) if p.exists()]
            if not found:
                raise UserError(f"image {i} is annotated in {parts} but its file is not in "
                                 f"{folder}")
            paths.append(found[0])
        return ids, paths
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return [p.stem for p in paths], paths
