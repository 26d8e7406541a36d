"""Rank a model's attention heads by how well their maps of the model's default method (CLS
attention; SigLIP: mean attention) cover the expert boxes.

    python scripts/rank_heads.py --model dinov3 --layer -1 [--random-weights]
"""

import argparse
from pathlib import Path

import numpy as np

import ssl_jax
from ssl_jax.attention import default_method, map_method, per_head_method, to_heatmap
from ssl_jax.io.dataset import load_annotations, load_image, sample_dataset, union_mask
from ssl_jax.metrics import coverage, iou_at_percentiles

ap = argparse.ArgumentParser()
ap.add_argument("--model", default="dinov3")
ap.add_argument("--layer", type=int, default=-1)
ap.add_argument("--dataset", default=None)
ap.add_argument("--random-weights", action="store_true")
args = ap.parse_args()

root = Path(args.dataset or sample_dataset())
ann = load_annotations(root / "building_parts.json")
ids = sorted(ann)
model = ssl_jax.random_model(args.model) if args.random_weights else ssl_jax.load_model(args.model)
pixels, _ = ssl_jax.preprocess(model, [load_image(root / "images" / i) for i in ids],
                        mode="squash", size=(224, 224))
method = map_method(per_head_method(default_method(model.spec)))
out = ssl_jax.forward(model, pixels, attentions="full", layers=[args.layer])
per_head = method.compute(out, layer=out.attention_layers[0])  # (I, heads, h, w)
heat = to_heatmap(per_head, (224, 224))
masks = np.stack([union_mask(ann[i].boxes, (224, 224)) for i in ids])[:, None]
iou = np.asarray(iou_at_percentiles(heat, masks, (90,))[0][..., 0]).mean(0)
cov = np.asarray(coverage(heat, masks)).mean(0)
print(f"{args.model} layer {out.attention_layers[0]}: heads by IoU@90")
for h in np.argsort(-iou):
    print(f"  head {h:2d}  IoU@90 {iou[h]:.3f}  coverage {cov[h]:.3f}")
