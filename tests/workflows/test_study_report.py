"""The study after extraction: evaluate → compare → report on the embedded sample dataset,
with small real-architecture checkpoints; the demo pipeline reuses its cache."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
from ssl_jax.workflows.study.config import StudyConfig
from ssl_jax.workflows.study.pipeline import run_study
from tests.support import hf_reference as ref

MODELS = ("dinov3", "siglip2")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study_report")
    weights = {}
    for alias in MODELS:
        folder = root / f"ckpt_{alias}"
        ref.build(alias, seed=2, num_layers=2).save_pretrained(folder)
        weights[alias] = str(folder)
    cfg = StudyConfig(name="test", dataset="sample", models=MODELS,
                      methods=("cls", "cls_heads", "mean", "rollout", "probe"),
                      input_size=112, heatmap_size=112, batch_size=8, n_bootstrap=500,
                      n_random_trials=3, weights=weights)
    out = root / "run"
    summary = run_study(cfg, out, progress=False)
    return cfg, out, summary, _written(out)


def _written(out: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of every file the stages after extraction wrote: a rewrite (atomic
    replace or in place) changes one of them."""
    files = [out / "stages.json", *(p for p in (out / "results").rglob("*") if p.is_file())]
    return {str(p.relative_to(out)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in files}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_tables(study):
    _, out, _, _ = study
    res = out / "results"
    rows = _rows(res / "summary.csv")
    metrics = {r["metric"] for r in rows}
    assert {"iou@90", "iou@50", "coverage", "pointing", "mse", "kl"} <= metrics
    labels = {(r["model"], r["method"]) for r in rows}
    assert ("dinov3", "cls") in labels and ("dinov3", "rollout") in labels
    assert ("siglip2", "probe") in labels and ("siglip2", "cls") not in labels
    assert ("baseline", "center_gaussian") in labels and ("baseline", "random") in labels
    for r in rows:  # CIs bracket the mean
        assert float(r["ci_lo"]) <= float(r["mean"]) + 1e-6 <= float(r["ci_hi"]) + 2e-6
    assert all(0.0 <= float(r["mean"]) <= 1.0 for r in rows if r["metric"].startswith("iou"))
    per_image = _rows(res / "per_image.csv")
    n_images = json.loads((out / "cache" / "cache.json").read_text())["image_ids"]
    assert len({r["image_id"] for r in per_image}) == len(n_images)
    heads = _rows(res / "heads.csv")
    assert {int(r["head"]) for r in heads} == set(range(12))
    assert _rows(res / "by_style.csv") and _rows(res / "by_feature.csv")
    cmp = _rows(res / "compare.csv")
    assert {r["family"] for r in cmp} >= {"models", "vs_baselines"}
    for r in cmp:
        assert float(r["p"]) <= float(r["p_holm"]) + 1e-12 <= 1.0 + 1e-12


@pytest.mark.slow
def test_center_baseline_matches_a_direct_computation(study):
    """The centre-Gaussian IoU@90 row equals a plain numpy evaluation of its definition."""
    from ssl_jax.io.dataset import load_annotations, sample_dataset, union_mask

    cfg, out, _, _ = study
    ids = json.loads((out / "cache" / "cache.json").read_text())["image_ids"]
    ann = load_annotations(Path(sample_dataset()) / "building_parts.json")
    s = cfg.heatmap_size
    y = np.arange(s)[:, None] - (s - 1) / 2
    x = np.arange(s)[None, :] - (s - 1) / 2
    g = np.exp(-(x**2 + y**2) / (2 * (s / 4) ** 2)).ravel()
    k = max(1, round(s * s * 10 / 100))
    top = np.zeros(s * s, bool)
    top[np.lexsort((np.arange(s * s), -g))[:k]] = True
    ious = []
    for i in ids:
        m = union_mask(ann[i].boxes, (s, s)).ravel()
        ious.append((top & m).sum() / ((top | m).sum() + 1e-8))
    row = next(r for r in _rows(out / "results" / "summary.csv")
               if r["model"] == "baseline" and r["method"] == "center_gaussian"
               and r["metric"] == "iou@90")
    assert float(row["mean"]) == pytest.approx(float(np.mean(ious)), abs=1e-6)


@pytest.mark.slow
def test_report_panels(study):
    _, out, summary, _ = study
    report = out / "results" / "report"
    html = (report / "report.html").read_text()
    pngs = sorted(report.glob("*.png"))
    names = {p.name for p in pngs}
    assert {"overlays.png", "layers_iou90.png", "models_iou90.png", "heads_iou90.png",
            "styles_iou90.png", "features_iou90.png"} <= names
    for p in pngs:
        assert p.name in html, f"{p.name} not referenced by report.html"
        px = np.asarray(Image.open(p).convert("L"), np.float32)
        assert px.std() > 5.0, f"{p.name} looks blank"
    assert len(re.findall(r"data:image/png;base64,", html)) == len(pngs)  # self-contained
    assert "report.html" in summary


@pytest.mark.slow
def test_rerun_reuses_everything(study):
    cfg, out, _, first = study
    summary = run_study(cfg, out, progress=False)
    assert "evaluate 0.0s, compare 0.0s, report 0.0s" in summary
    # what the rerun did, not how long it took: no table, figure or stamp was rewritten, and
    # extraction loaded and compiled no model (no first-batch timing recorded)
    assert _written(out) == first
    timings = json.loads((out / "cache" / "extract_manifest.json").read_text())["timings_s"]
    assert not any(k.endswith(("_first_batch_incl_compile", "_steady")) for k in timings), timings


@pytest.mark.slow
@pytest.mark.subprocess
def test_cli_help_documents_every_option():
    for cmd in ("extract", "evaluate", "compare", "report", "demo"):
        r = subprocess.run([sys.executable, "-m", "ssl_jax.cli", cmd, "--help"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0
        opts = re.findall(r"^\s+(--[a-z-]+)", r.stdout, flags=re.M)
        assert opts, r.stdout
        # every option line carries help text (click puts it on the same or next line)
        blocks = [b for b in re.split(r"\n(?=\s+--)", r.stdout.split("Options:")[1])
                  if b.strip()]
        for b in blocks:
            assert len(b.split()) > 2, f"{cmd}: option without help: {b!r}"


@pytest.mark.subprocess
def test_evaluate_without_cache_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "ssl_jax.cli", "evaluate", "--cache",
                        str(tmp_path / "nothing"), "--out", str(tmp_path / "res")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "not a map cache" in r.stderr
