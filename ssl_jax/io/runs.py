"""Fine-tuning runs on disk: orbax checkpoints (latest + best), the run record, loading a run
as a `Model`, and export to Hugging Face safetensors.

A run folder:
    finetune_run.json      what was trained: model spec, HF config, strategy, settings, classes
    split.json             the train/val split artifact
    base/                  the frozen starting backbone (orbax), so a run is self-contained
    checkpoints/latest/    newest full train state (params, optimizer, step), every N steps
    checkpoints/best/      trainable params of the best epoch by validation accuracy
    manifest.json          versions, machine, seeds, timings, per-epoch history
Each checkpoint's metadata carries a sha256 of the restored arrays: corruption that orbax
itself would read without complaint is still caught.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.io.atomic import write_json_atomic
from ssl_jax.io.checkpoints import CheckpointSeries, restore_tree, save_tree
from ssl_jax.models.checkpoint import tree_digest
from ssl_jax.models.config import bundled_checkpoint_files, spec_from_config
from ssl_jax.models.convert import CheckpointError, key_map, param_shapes
from ssl_jax.models.families import MODELS, family
from ssl_jax.models.model import Model
from ssl_jax.models.spec import ModelSpec, Preprocessing
from ssl_jax.train.lora import LoraConfig, merge
from ssl_jax.train.step import initial_state_like, initial_trainable

RUN_FILE = "finetune_run.json"
RUN_FORMAT = "ssl_jax.finetune/1"


# ---- spec <-> JSON ------------------------------------------------------------------------------

def spec_to_json(spec: ModelSpec) -> dict:
    return dataclasses.asdict(spec)


def _tuples(v):
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


def spec_from_json(d: dict, *, where: str = RUN_FILE) -> ModelSpec:
    try:
        pre = {k: _tuples(v) for k, v in d["preprocessing"].items()}
        fields = {k: _tuples(v) for k, v in d.items() if k != "preprocessing"}
        return ModelSpec(**fields, preprocessing=Preprocessing(**pre))
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{where}: malformed model spec ({type(e).__name__}: {e})") from None


def hf_files_for(model: Model) -> tuple[dict | None, dict | None]:
    """(config.json, preprocessor_config.json) describing `model`'s architecture, if known:
    from its checkpoint folder, or the bundled real config for aliases / random models."""
    src = model.source or ""
    folder = Path(src)
    if src and folder.is_dir() and (folder / "config.json").exists():
        cfg = json.loads((folder / "config.json").read_text())
        pre = folder / "preprocessor_config.json"
        return cfg, (json.loads(pre.read_text()) if pre.exists() else None)
    alias = src.split(":", 1)[1] if src.startswith("random:") else src
    if alias in MODELS:
        files = bundled_checkpoint_files(alias)
        return files["config"], files.get("preprocessor_config")
    return None, None


# ---- the run record ---------------------------------------------------------------------------------

def is_finetuned_run(path: str | os.PathLike) -> bool:
    """True for a folder written by `ssl_jax.train.finetune` (what `load_model` dispatches on)."""
    return (Path(path) / RUN_FILE).is_file()


def read_run(run_dir: str | os.PathLike) -> dict:
    path = Path(run_dir) / RUN_FILE
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{run_dir}: not a fine-tuning run (no {RUN_FILE})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: corrupt run record ({e})") from None
    if not isinstance(d, dict) or d.get("format") != RUN_FORMAT:
        got = d.get("format") if isinstance(d, dict) else type(d).__name__
        raise CheckpointError(f"{path}: unknown run format {got!r} (expected {RUN_FORMAT!r})")
    for key in ("spec", "training"):
        if key not in d:
            raise CheckpointError(f"{path}: run record has no {key!r}")
    return d


def write_json(path: Path, payload: Any) -> None:
    write_json_atomic(path, payload, indent=1)


def compare_records(stored: dict, current: dict, *, where: str) -> None:
    """Refuse to resume a run with a different model or different training settings."""
    stored, current = (json.loads(json.dumps(r, default=str)) for r in (stored, current))
    diffs = []
    if stored.get("spec") != current.get("spec"):
        keys = sorted(k for k in set(stored.get("spec", {})) | set(current.get("spec", {}))
                      if stored.get("spec", {}).get(k) != current.get("spec", {}).get(k))
        diffs.append(f"model spec ({', '.join(keys)})")
    if stored.get("base_sha256") != current.get("base_sha256"):
        diffs.append("base weights (sha256 differs)")
    s_t, c_t = stored.get("training", {}), current.get("training", {})
    for k in sorted(set(s_t) | set(c_t)):
        if s_t.get(k) != c_t.get(k):
            diffs.append(f"{k}: stored {s_t.get(k)!r}, now {c_t.get(k)!r}")
    if stored.get("split_id") != current.get("split_id"):
        diffs.append(f"split: stored {stored.get('split_id')}, now {current.get('split_id')}")
    if diffs:
        raise CheckpointError(f"{where}: holds a different run; cannot resume it with these "
                              "settings (use a new --out folder):\n  " + "\n  ".join(diffs))


# ---- orbax (through ssl_jax.io.checkpoints) ----------------------------------------------------

class RunCheckpoints:
    """The checkpoints of a run: `latest` (full state) and `best` (trainable params of the
    best epoch by validation accuracy), one step kept each."""

    def __init__(self, run_dir: str | os.PathLike, *, create: bool = True):
        self.root = Path(run_dir).absolute() / "checkpoints"
        by = "by a different model/strategy"
        self.latest = CheckpointSeries(self.root / "latest", what="latest checkpoint",
                                       written_by=by, create=create)
        try:
            self.best = CheckpointSeries(self.root / "best", what="best checkpoint",
                                         written_by=by, create=create, best_metric="val_accuracy")
        except CheckpointError:
            self.latest.close()
            raise

    def save_latest(self, step: int, state: dict, meta: dict) -> None:
        self.latest.save(step, state, meta)

    def save_best(self, step: int, trainable: dict, meta: dict) -> None:
        self.best.save(step, trainable, meta,
                       metrics={"val_accuracy": float(meta["val_accuracy"])})

    def restore(self, which: str, target) -> tuple[int, Any, dict] | None:
        """(step, state, meta) of the newest `which` checkpoint, or None if there is none.
        `target` is an example tree of the expected structure (arrays or shape structs)."""
        return (self.latest if which == "latest" else self.best).restore(target)

    def close(self) -> None:
        self.latest.close()
        self.best.close()


def save_base(run_dir: Path, params: dict) -> str:
    """Write the starting backbone once; returns its sha256."""
    path = Path(run_dir) / "base"
    return tree_digest(params) if path.exists() else save_tree(path, params)


def restore_base(run_dir: Path, spec: ModelSpec, digest: str | None) -> dict:
    target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s, jnp.float32), param_shapes(spec),
                          is_leaf=lambda s: isinstance(s, tuple))
    return restore_tree(Path(run_dir) / "base", target, sha256=digest, what="base backbone")


# ---- loading a run ------------------------------------------------------------------------------------

@dataclasses.dataclass
class FinetunedClassifier:
    """A fine-tuned run loaded back: the backbone as a `Model` (LoRA merged), the head, and
    what produced it."""

    model: Model
    head: dict
    class_names: tuple[str, ...]
    record: dict
    step: int
    meta: dict


def load_classifier(run_dir: str | os.PathLike, *, which: str = "best",
                    dtype=jnp.float32) -> FinetunedClassifier:
    """Load a run's `best` (default) or `latest` checkpoint."""
    if which not in ("best", "latest"):
        raise ValueError(f"which must be 'best' or 'latest', got {which!r}")
    run_dir = Path(run_dir)
    record = read_run(run_dir)
    spec = spec_from_json(record["spec"], where=str(run_dir / RUN_FILE))
    training = record["training"]
    lora = LoraConfig(**{k: _tuples(v) for k, v in training["lora"].items()}) \
        if training["strategy"] == "lora" else None
    base = restore_base(run_dir, spec, record.get("base_sha256"))
    target = initial_trainable(spec, base, training["strategy"], len(record["class_names"]),
                               lora, jax.random.key(0), abstract=True)
    ckpts = RunCheckpoints(run_dir, create=False)
    try:
        if which == "best":
            got = ckpts.restore("best", target)
        else:
            state_target = initial_state_like(spec, base, training, len(record["class_names"]),
                                              lora)
            got = ckpts.restore("latest", state_target)
            got = None if got is None else (got[0], got[1]["trainable"], got[2])
    finally:
        ckpts.close()
    if got is None:
        raise CheckpointError(f"{run_dir}: no {which} checkpoint yet" + (
            " (no epoch has finished)" if which == "best" else ""))
    step, trainable, meta = got
    backbone = trainable.get("backbone", base)
    if lora is not None:
        backbone = merge(spec, base, trainable["lora"], lora)
    model = Model(params=jax.tree.map(jnp.asarray, backbone), spec=spec, dtype=dtype,
                  source=f"{run_dir.absolute()}#{which}")
    return FinetunedClassifier(model, trainable["head"], tuple(record["class_names"]), record,
                               step, meta)


def load_finetuned(run_dir: str | os.PathLike, *, which: str = "best",
                   dtype=jnp.float32) -> Model:
    """A fine-tuned run folder as a `Model` (backbone only, LoRA merged), usable by every
    attention, metric and report tool. `load_model` dispatches here for run folders."""
    return load_classifier(run_dir, which=which, dtype=dtype).model


# ---- export -------------------------------------------------------------------------------------------

def _inverse(entry, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(flat torch indices, values) that entry.transform maps onto `value`: every transform in
    the key map only moves elements (reshape/transpose/slice), so pushing an index array
    through it gives the inverse exactly."""
    n = int(np.prod(entry.torch_shape))
    idx = entry.transform(np.arange(n, dtype=np.int64).reshape(entry.torch_shape))
    idx = np.asarray(idx).reshape(value.shape)
    return idx.ravel(), value.ravel()


def params_to_state_dict(spec: ModelSpec, params: dict) -> dict[str, np.ndarray]:
    """Our params → a state dict with the checkpoint's (hub) names, the inverse of
    `convert_state_dict`."""
    flat: dict[str, np.ndarray] = {}
    for e in key_map(spec):
        node = params
        for part in e.path:
            node = node[part]
        value = np.asarray(node, np.float32)
        if e.layer is not None:
            value = value[e.layer]
        if e.slot is not None:
            value = value[:, e.slot] if e.path[-1] == "kernel" else value[e.slot]
        name = e.keys[0]
        if name not in flat:
            flat[name] = np.zeros(int(np.prod(e.torch_shape)), np.float32)
        i, v = _inverse(e, value)
        flat[name][i] = v
    shapes = {e.keys[0]: e.torch_shape for e in key_map(spec)}
    return {k: v.reshape(shapes[k]) for k, v in flat.items()}


def export_hf(run_dir: str | os.PathLike, out_dir: str | os.PathLike, *, which: str = "best",
              hf_config: dict | None = None, preprocessor: dict | None = None) -> Path:
    """Write the fine-tuned backbone (LoRA merged) as a Hugging Face folder: config.json,
    preprocessor_config.json and model.safetensors with the hub's tensor names (loadable by
    `ssl_jax.load_model` and transformers), plus classifier_head.safetensors / head.json."""
    from safetensors.numpy import save_file

    clf = load_classifier(run_dir, which=which)
    config = hf_config if hf_config is not None else clf.record.get("hf_config")
    pre = preprocessor if preprocessor is not None else clf.record.get("hf_preprocessor")
    if config is None:
        raise CheckpointError(f"{run_dir}: the run records no Hugging Face config for its model "
                              "(it was built in memory); pass hf_config=")
    check = spec_from_config(config, pre)
    spec = clf.model.spec
    diffs = [f.name for f in dataclasses.fields(spec) if f.name != "preprocessing"
             and getattr(check, f.name) != getattr(spec, f.name)]
    if diffs:
        raise CheckpointError(f"{run_dir}: the recorded HF config does not describe the trained "
                              f"model (differs in {', '.join(diffs)})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prefix = family(spec).export_prefix(config)  # composite configs: "vision_model."
    sd = {prefix + k: np.ascontiguousarray(v)
          for k, v in params_to_state_dict(spec, clf.model.params).items()}
    save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
    write_json(out / "config.json", config)
    if pre is not None:
        write_json(out / "preprocessor_config.json", pre)
    head = {"weight": np.ascontiguousarray(np.asarray(clf.head["kernel"]).T),
            "bias": np.asarray(clf.head["bias"])}
    save_file(head, str(out / "classifier_head.safetensors"))
    write_json(out / "head.json", {"class_names": list(clf.class_names),
                                   "features": "pooled" if spec.pooler == "map" else "cls",
                                   "source_run": str(Path(run_dir).absolute()), "which": which,
                                   "step": clf.step})
    return out
