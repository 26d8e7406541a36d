"""Checks the data layer against the real WikiChurches files (SPEC R3.2-R3.6): totals, label
and style counts, the clamp rule and the published split.

    python scripts/check_wikichurches.py data/wikichurches   # after `ssl-jax download`

(A script, not a test: the dataset cannot be downloaded where the tests run.)"""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from ssl_jax.io import dataset as D

ROOT = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("SSL_DATASET_PATH", "."))


def test_building_parts_totals():
    bp = D.load_building_parts(ROOT / "building_parts.json")
    assert len(bp.images) == 139 and bp.num_boxes == 631 and len(bp.features) == 106
    names = [f.name for f in bp.features]
    assert names[:3] == ["Apse", "Arcade", "Arcade Gallery"] and names[-1] == "Zigzag Frieze"
    assert bp.features[2].parents == (1, 51) and bp.features[5].parents == (79, 72)
    labels = Counter(int(x) for a in bp.images.values() for x in a.labels)
    assert [labels[k] for k in (83, 71, 22, 65, 91, 57, 92, 64, 97, 102)] == [
        38, 37, 31, 28, 25, 24, 21, 20, 19, 18]
    tags = Counter(s for a in bp.images.values() for s in a.style_labels)
    assert [tags[i] for i in range(4)] == [54, 49, 22, 17]
    assert all(a.style_label is not None for a in bp.images.values())
    assert all(i.endswith("_wd0.jpg") for i in bp.images)
    assert max(a.num_boxes for a in bp.images.values()) <= 10
    clamped = [i for i, a in bp.images.items() if (a.xywh[:, :2] < 0).any()]
    assert 1 <= len(clamped) <= 8  # "~4 images affected"
    orig = D.load_building_parts(ROOT / "building_parts.json", clamp="original")
    for i in clamped:
        assert not np.array_equal(orig.images[i].boxes, bp.images[i].boxes)


def test_published_split_counts():
    ds = D.load_dataset(ROOT, require_churches=True)
    annotated_labelled = [a for a in ds.annotated()
                          if ds.churches.get(a.qid) and ds.churches[a.qid].style_label is not None]
    assert len(annotated_labelled) == 125
    split = D.make_split(ds, seed=42, created_at="t")
    assert split.train_class_counts == {"Romanesque": 1214, "Gothic": 1216, "Renaissance": 137,
                                        "Baroque": 1104}
    assert split.val_class_counts == {"Romanesque": 303, "Gothic": 304, "Renaissance": 34,
                                      "Baroque": 276}


if __name__ == "__main__":
    if not (ROOT / "building_parts.json").is_file():
        sys.exit(f"{ROOT} has no building_parts.json (usage: check_wikichurches.py FOLDER)")
    test_building_parts_totals()
    print("building_parts.json: 139 images, 631 boxes, 106 feature types, counts as published")
    if (ROOT / "images").is_dir():
        test_published_split_counts()
        print("split (seed 42): 3671 train / 917 val, class counts as published")
