"""Issue 12, study side: the cache knows what it holds (no missing image scored as a zero map),
evaluate reads the cache read-only, config values are type-checked, an empty dataset is
refused at extract, results folders are replaced as a unit, a failed first extract leaves
nothing that blocks the corrected run, NaN (degenerate) maps are counted and left out of
every aggregate, and every file written has a normal file's mode.

One tiny study shared by the tests: 6 images of the sample dataset, a 1-layer DINOv2 with
random weights saved as a checkpoint, maps at 56 px."""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from ssl_jax.core.errors import UserError
from ssl_jax.io.store import CacheError, open_existing
from ssl_jax.workflows.study.config import StudyConfig, load_config
from ssl_jax.workflows.study.dataset import study_images
from ssl_jax.workflows.study.evaluate import run_evaluate
from ssl_jax.workflows.study.run_extract import run_extract
from tests.support import hf_reference as ref

N_IMAGES = 6
QUIET = {"progress": False, "log": lambda s: None}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """(config, image ids, paths, a finished cache folder)."""
    from ssl_jax.io.dataset import sample_dataset

    root = tmp_path_factory.mktemp("correctness_study")
    src = Path(sample_dataset())
    data = root / "data"
    (data / "images").mkdir(parents=True)
    parts = json.loads((src / "building_parts.json").read_text())
    keep = sorted(parts["annotations"])[:N_IMAGES]
    parts["annotations"] = {k: parts["annotations"][k] for k in keep}
    (data / "building_parts.json").write_text(json.dumps(parts))
    shutil.copy(src / "churches.json", data / "churches.json")
    for k in keep:
        shutil.copy(src / "images" / k, data / "images" / k)
    ckpt = root / "ckpt_dinov2"
    ref.build("dinov2", seed=3, num_layers=1).save_pretrained(ckpt)
    cfg = StudyConfig(name="t", dataset=str(data), models=("dinov2",), methods=("cls", "mean"),
                      input_size=56, heatmap_size=56, batch_size=2, n_bootstrap=50,
                      n_random_trials=2, weights={"dinov2": str(ckpt)})
    ids, paths = study_images(cfg.dataset)
    cache = root / "cache_full"
    run_extract(cfg, cache, ids, paths, **QUIET)
    return cfg, ids, paths, cache


def _copy(cache: Path, dst: Path) -> Path:
    shutil.copytree(cache, dst)
    return dst


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


# ---- case 2: the cache knows what it holds ----------------------------------------------


@pytest.mark.slow
@pytest.mark.subprocess
def test_half_finished_cache_is_refused_naming_the_missing_images(study, tmp_path):
    """Killed after 1 batch of 2 images: evaluate used to score the other 4 as zero maps and
    exit 0; now it names model, method, the first ids and the count."""
    cfg, ids, paths, _ = study
    cache = tmp_path / "half"
    run_extract(cfg, cache, ids, paths, stop_after_batches=1, **QUIET)
    with pytest.raises(CacheError) as e:
        run_evaluate(cfg, cache, tmp_path / "res", progress=False)
    msg = str(e.value)
    assert f"dinov2/cls: 4 of {N_IMAGES} images ({ids[2]}, {ids[3]}, {ids[4]}, … 1 more)" in msg
    assert "dinov2/mean: 4 of 6" in msg and "--partial" in msg
    assert not (tmp_path / "res").exists()  # nothing written
    with pytest.raises(CacheError, match=ids[2]):  # every read checks, not only evaluate's
        open_existing(cache).read("dinov2", "cls")
    # the CLI says it in one line, exit status non-zero
    r = subprocess.run([sys.executable, "-m", "ssl_jax.cli", "evaluate", "--dataset",
                        cfg.dataset, "--models", "dinov2", "--methods", "cls,mean", "--cache",
                        str(cache), "--out", str(tmp_path / "res2"), "--no-progress"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert f"4 of {N_IMAGES} images ({ids[2]}" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.slow
def test_lost_chunk_with_done_flag_is_missing_and_recomputed(study, tmp_path):
    cfg, ids, paths, full = study
    cache = _copy(full, tmp_path / "c")
    before = open_existing(full).read("dinov2", "cls")
    (cache / "dinov2" / "cls" / "3.0.0.0").unlink()  # done flag of image 3 stays
    assert open_existing(cache).done_mask("dinov2")[3] == 0
    with pytest.raises(CacheError, match=rf"dinov2/cls: 1 of 6 images \({ids[3]}\)"):
        run_evaluate(cfg, cache, tmp_path / "res", progress=False)
    logs = []
    run_extract(cfg, cache, ids, paths, progress=False, log=logs.append)
    assert "dinov2: 1 images computed, 5 already cached" in logs[0]
    np.testing.assert_array_equal(open_existing(cache).read("dinov2", "cls"), before)


@pytest.mark.slow
def test_method_added_to_a_finished_cache_is_computed(study, tmp_path):
    """`extract --methods cls,mean` on a finished cls-only cache used to say 'already
    cached' and never compute mean."""
    cfg, ids, paths, full = study
    cache = tmp_path / "c"
    run_extract(cfg.replace(methods=("cls",)), cache, ids, paths, **QUIET)
    logs = []
    run_extract(cfg, cache, ids, paths, progress=False, log=logs.append)
    assert "dinov2: 6 images computed, 0 already cached" in logs[0]
    c, ref_cache = open_existing(cache), open_existing(full)
    assert c.complete("dinov2", "mean").all()
    for method in ("cls", "mean"):  # same batching: bit-identical to one run with both
        np.testing.assert_array_equal(c.read("dinov2", method), ref_cache.read("dinov2", method))
    assert c.model_info("dinov2")["methods"] == ["cls", "mean"]
    logs.clear()
    run_extract(cfg, cache, ids, paths, progress=False, log=logs.append)
    assert "0 images computed, 6 already cached" in logs[0]


@pytest.mark.slow
def test_partial_evaluation_says_so_in_every_output(study, tmp_path):
    from ssl_jax.workflows.study.compare import run_compare
    from ssl_jax.workflows.study.report import run_report

    cfg, ids, paths, _ = study
    cache = tmp_path / "half"
    run_extract(cfg, cache, ids, paths, stop_after_batches=1, **QUIET)
    res = tmp_path / "res"
    m = run_evaluate(cfg, cache, res, partial=True, progress=False, log=lambda s: None)
    assert m["partial"] is True
    assert m["missing"]["dinov2/cls"] == {"count": 4, "image_ids": ids[2:]}
    summary = _rows(res / "summary.csv")
    cls = [r for r in summary if r["model"] == "dinov2" and r["method"] == "cls"]
    assert cls and all((r["n"], r["n_missing"]) == ("2", "4") for r in cls)
    base = [r for r in summary if r["model"] == "baseline"]
    assert all((r["n"], r["n_missing"]) == ("6", "0") for r in base)
    per = _rows(res / "per_image.csv")
    status = {r["image_id"]: r["status"] for r in per if r["method"] == "cls"}
    assert status == {i: "ok" if i in ids[:2] else "missing" for i in ids}
    assert all(r["iou@90"] == "nan" for r in per if r["status"] == "missing")
    for name in ("by_style.csv", "by_feature.csv"):
        rows = _rows(res / name)
        assert rows and all("n_missing" in r for r in rows)
        assert sum(int(r["n_missing"]) for r in rows if r["method"] == "cls") > 0
    with np.load(res / "per_image_metrics.npz") as z:
        assert np.isnan(z["dinov2/cls/iou@90"][2:]).all()
        assert np.isfinite(z["dinov2/cls/iou@90"][:2]).all()
    run_compare(cfg, res)
    cmp = _rows(res / "compare.csv")
    vs = [r for r in cmp if r["a"] == "dinov2/cls" and r["family"] == "vs_baselines"]
    assert vs and all((r["n"], r["n_missing"]) == ("2", "4") for r in vs)
    rep = run_report(cfg, cache, res)
    html = Path(rep["html"]).read_text()
    assert "PARTIAL" in html and rep["partial"] is True


@pytest.mark.slow
def test_evaluate_opens_the_cache_read_only(study, tmp_path, monkeypatch):
    """A read-only cache folder was refused ('is not writable') though evaluate only reads.
    Tests run as root, which chmod does not stop: the folder is made read-only AND write
    access is denied through os.access, every tensorstore open is checked for read-only mode,
    and no file under the cache may change."""
    import tensorstore as ts

    cfg, _, _, full = study
    cache = _copy(full, tmp_path / "ro")
    snap = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in cache.rglob("*")}
    modes = []
    real_open, real_access = ts.open, os.access

    def spy_open(spec, *a, **k):
        modes.append(k)
        return real_open(spec, *a, **k)

    def deny(path, mode, *a, **k):
        if mode & os.W_OK and str(Path(path).absolute()).startswith(str(cache)):
            return False
        return real_access(path, mode, *a, **k)

    monkeypatch.setattr(ts, "open", spy_open)
    monkeypatch.setattr(os, "access", deny)
    for p in [cache, *cache.rglob("*")]:
        p.chmod(p.stat().st_mode & ~0o222)
    try:
        run_evaluate(cfg, cache, tmp_path / "res", progress=False)
    finally:
        for p in [cache, *cache.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)
    assert modes and all(k.get("read") is True and k.get("write") is False
                         and not k.get("create") for k in modes), modes
    assert {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in cache.rglob("*")} == snap
    assert (tmp_path / "res" / "summary.csv").exists()


# ---- case 7b: config types, empty dataset ------------------------------------------------


@pytest.mark.parametrize("line, message", [
    ('batch_size = "2"', "batch_size must be an integer, got '2'"),
    ('percentiles = ["abc"]', "percentiles must be a list of integers, got ('abc',)"),
    ("n_bootstrap = 1.5", "n_bootstrap must be an integer, got 1.5"),
    ('models = "dinov2"', "models must be a list, got 'dinov2'"),
    ("allow_random_weights = 1", "allow_random_weights must be true or false, got 1"),
    ("seed = true", "seed must be an integer, got True"),
])
def test_config_values_are_type_checked(line, message, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(f"[study]\n{line}\n")
    with pytest.raises(UserError) as e:
        load_config(path)
    assert message in str(e.value) and str(path) in str(e.value)


@pytest.mark.subprocess
def test_config_type_error_is_one_line_in_the_cli(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[study]\nbatch_size = "2"\n')
    r = subprocess.run([sys.executable, "-m", "ssl_jax.cli", "extract", "--config", str(path),
                        "--cache", str(tmp_path / "c")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.strip() == (f"error: study config {path}: batch_size must be an integer, "
                                "got '2'")


@pytest.mark.slow
def test_dataset_without_annotated_images_is_refused_at_extract(study, tmp_path):
    cfg, _, _, _ = study
    data = tmp_path / "empty"
    shutil.copytree(cfg.dataset, data)
    parts = json.loads((data / "building_parts.json").read_text())
    (data / "building_parts.json").write_text(json.dumps({**parts, "annotations": {}}))
    with pytest.raises(UserError, match="annotates no image"):
        study_images(str(data))
    with pytest.raises(UserError, match="no annotated image"):
        run_extract(cfg.replace(dataset=str(data)), tmp_path / "c", [], [], **QUIET)
    assert not (tmp_path / "c").exists()


# ---- case 8: state left consistent -------------------------------------------------------


@pytest.mark.slow
def test_failed_first_extract_leaves_nothing_that_blocks_the_corrected_run(study, tmp_path):
    """A wrong weights path after cache.json was written: the corrected rerun (other input
    size too) used to be refused as 'made for a different study'."""
    cfg, ids, paths, full = study
    cache = tmp_path / "c"
    cache.mkdir()
    bad = cfg.replace(input_size=112, weights={"dinov2": str(tmp_path / "no_such_ckpt")})
    with pytest.raises(ValueError, match="no weights for 'dinov2'"):
        run_extract(bad, cache, ids, paths, **QUIET)
    assert list(cache.iterdir()) == []
    run_extract(cfg, cache, ids, paths, **QUIET)
    np.testing.assert_array_equal(open_existing(cache).read("dinov2", "cls"),
                                  open_existing(full).read("dinov2", "cls"))


@pytest.mark.slow
def test_results_folder_is_replaced_as_a_unit(study, tmp_path, monkeypatch):
    """Disk full while rewriting: the old run's folder stays whole (it used to get a new
    summary.csv beside the old manifest)."""
    cfg, _, _, full = study
    res = tmp_path / "res"
    run_evaluate(cfg, full, res, progress=False)
    (res / "compare.csv").write_text("from the old run\n")  # a later stage's product
    old = _tree(res)

    def disk_full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", disk_full)  # after the CSVs, before the JSON
    with pytest.raises(OSError, match="No space left"):
        run_evaluate(cfg.replace(seed=7), full, res, progress=False)
    assert _tree(res) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]  # no staging folder left
    monkeypatch.undo()
    run_evaluate(cfg.replace(seed=7), full, res, progress=False)
    new = _tree(res)
    assert new["summary.csv"] != old["summary.csv"]
    assert json.loads(new["evaluate_manifest.json"])["config"]["seed"] == 7
    assert "compare.csv" not in new  # made from the old tables: dropped, not mixed
    (res / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=r"holds files that are not this command's results "
                                        r"\(notes.txt\)"):
        run_evaluate(cfg, full, res, progress=False)
    assert (res / "notes.txt").read_text() == "mine"


# ---- case 6, table side: NaN (degenerate) maps are counted and left out ------------------


@pytest.mark.slow
def test_degenerate_maps_are_counted_and_left_out_of_every_aggregate(study, tmp_path,
                                                                     monkeypatch):
    """Image 0's cls map is all NaN. The metrics contract (ssl_jax.metrics) gives NaN for a
    degenerate map; emulated here with ~isfinite so the study side is tested on its own."""
    import jax.numpy as jnp

    import ssl_jax.workflows.study.evaluate as ev
    from ssl_jax.workflows.study.compare import run_compare

    cfg, _, _, full = study
    cache = _copy(full, tmp_path / "c")
    c = open_existing(cache)
    maps = c.read("dinov2", "cls", indices=[0])
    c.write("dinov2", [0], {"cls": np.full_like(maps, np.nan)})
    real = ev._metrics_fn

    def nan_contract(percentiles, tolerance):
        fn = real(percentiles, tolerance)

        def wrapped(m, g, t):
            out = fn(m, g, t)
            bad = ~jnp.isfinite(m).all(axis=(-2, -1))
            return {k: jnp.where(bad, jnp.nan, v) if v.shape == bad.shape else v
                    for k, v in out.items()}
        return wrapped

    monkeypatch.setattr(ev, "_metrics_fn", nan_contract)
    res = tmp_path / "res"
    run_evaluate(cfg, cache, res, progress=False)
    with np.load(res / "per_image_metrics.npz") as z:
        iou = z["dinov2/cls/iou@90"][:, 0]
    assert np.isnan(iou[0]) and np.isfinite(iou[1:]).all()
    per = [r for r in _rows(res / "per_image.csv") if r["method"] == "cls"]
    assert [r["status"] for r in per] == ["degenerate"] + ["ok"] * 5
    assert per[0]["iou@90"] == "nan"
    row = next(r for r in _rows(res / "summary.csv") if r["model"] == "dinov2"
               and r["method"] == "cls" and r["metric"] == "iou@90")
    assert (row["n"], row["n_degenerate"], row["n_missing"]) == ("5", "1", "0")
    assert float(row["mean"]) == pytest.approx(float(iou[1:].mean()), abs=1e-6)
    assert float(row["ci_lo"]) <= float(row["mean"]) <= float(row["ci_hi"])
    styles = [r for r in _rows(res / "by_style.csv") if r["method"] == "cls"]
    styled = [r for r in per if r["style"]]
    assert sum(int(r["n_degenerate"]) for r in styles) == int(bool(per[0]["style"]))
    assert sum(int(r["n"]) + int(r["n_degenerate"]) for r in styles) == len(styled)
    feats = [r for r in _rows(res / "by_feature.csv") if r["method"] == "cls"]
    assert any(int(r["n_degenerate"]) == 1 for r in feats)
    assert all(np.isfinite(float(r["box_iou@90"])) for r in feats if int(r["n_boxes"]))
    run_compare(cfg, res)
    cmp = _rows(res / "compare.csv")
    pairs = [r for r in cmp if "dinov2/cls" in (r["a"], r["b"])]
    assert pairs and all((r["n"], r["n_degenerate"]) == ("5", "1") for r in pairs)
    assert all(np.isfinite(float(r["mean_diff"])) for r in pairs)


# ---- case 9: every file a normal file's mode ---------------------------------------------


@pytest.mark.slow
def test_every_written_file_has_normal_permissions(study, tmp_path):
    from ssl_jax.workflows.study.compare import run_compare
    from ssl_jax.workflows.study.report import run_report

    cfg, ids, paths, _ = study
    old = os.umask(0o022)
    try:
        run_extract(cfg, tmp_path / "cache", ids, paths, **QUIET)
        run_evaluate(cfg, tmp_path / "cache", tmp_path / "results", progress=False)
        run_compare(cfg, tmp_path / "results")
        run_report(cfg, tmp_path / "cache", tmp_path / "results")
    finally:
        os.umask(old)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) > 30 and any(p.suffix == ".png" for p in files)
    bad = {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode))
           for p in [tmp_path / "cache", tmp_path / "results", *tmp_path.rglob("*")]
           if stat.S_IMODE(p.stat().st_mode) != (0o755 if p.is_dir() else 0o644)}
    assert not bad
