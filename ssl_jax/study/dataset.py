"""Which images a study runs on, from a dataset folder in the WikiChurches layout."""

from __future__ import annotations

from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def dataset_root(dataset: str) -> Path:
    if dataset == "sample":
        from ..data import sample_dataset

        return Path(sample_dataset())
    root = Path(dataset)
    if not root.is_dir():
        raise ValueError(f"dataset folder {root} does not exist (download it with "
                         "`ssl-jax download`, or use --dataset sample)")
    return root


def study_images(dataset: str) -> tuple[list[str], list[Path]]:
    """(image ids, paths) of the images a study extracts, in a fixed (sorted) order."""
    root = dataset_root(dataset)
    folder = root / "images"
    if not folder.is_dir():
        raise ValueError(f"dataset {root} has no images/ folder")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return [p.stem for p in paths], paths
