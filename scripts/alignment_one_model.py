"""The alignment study for one model, as plain library calls (no CLI, no cache).

    python scripts/alignment_one_model.py --model dinov2 [--dataset PATH] [--random-weights]

Loads the model, preprocesses every annotated image (squash to 224), takes the model's
default map (CLS attention; SigLIP: mean attention) of every layer, scores it against the
expert boxes and prints IoU@90 / coverage per layer with bootstrap CIs.
"""

import argparse
from pathlib import Path

import jax
import numpy as np

import ssl_jax
from ssl_jax.attention import default_method, map_method, to_heatmap
from ssl_jax.io.dataset import load_annotations, load_image, sample_dataset, union_mask
from ssl_jax.metrics import alignment_metrics, gaussian_target
from ssl_jax.stats import bootstrap_ci

ap = argparse.ArgumentParser()
ap.add_argument("--model", default="dinov2")
ap.add_argument("--dataset", default=None, help="WikiChurches folder (default: the sample)")
ap.add_argument("--random-weights", action="store_true", help="no checkpoint needed")
ap.add_argument("--layers", type=int, default=None, help="use only the first N layers")
args = ap.parse_args()

root = Path(args.dataset or sample_dataset())
ann = load_annotations(root / "building_parts.json")
ids = sorted(ann)
model = (ssl_jax.random_model(args.model) if args.random_weights
         else ssl_jax.load_model(args.model))
if args.layers:  # a shallower model, e.g. for a quick check
    model = model.replace(spec=model.spec.replace(num_layers=args.layers),
                          params={**model.params, "blocks": jax.tree.map(
                              lambda a: a[: args.layers], model.params["blocks"])})
images = [load_image(root / "images" / i) for i in ids]  # every mode, EXIF warned
pixels, _ = ssl_jax.preprocess(model, images, mode="squash", size=(224, 224))
method = map_method(default_method(model.spec))
out = ssl_jax.forward(model, pixels, attentions="full")
heat = to_heatmap(method.compute(out), (224, 224))  # (images, layers, 224, 224)
masks = np.stack([union_mask(ann[i].boxes, (224, 224)) for i in ids])
targets = np.stack([gaussian_target(ann[i].boxes, 224, 224) for i in ids])
scores = alignment_metrics(heat, masks, targets, percentiles=(90,))
for metric in ("iou@90", "coverage"):
    mean, lo, hi = bootstrap_ci(np.asarray(scores[metric]).T, jax.random.key(0),
                                n_resamples=2000)
    print(f"{args.model} {method.name} {metric}:")
    for layer, (m, a, b) in enumerate(zip(mean, lo, hi, strict=True)):
        print(f"  layer {layer:2d}  {m:.3f}  [{a:.3f}, {b:.3f}]")
