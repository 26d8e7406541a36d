"""The map-method registry (ssl_jax.attention.registry): every study model gets exactly the
methods and the default it got before the registry existed, and each method computes what
the maps functions compute."""

import dataclasses

import jax
import numpy as np
import pytest

import ssl_jax
from ssl_jax.attention import cls_map, mean_map, probe_map, rollout_map
from ssl_jax.attention.registry import (
    DEFAULT_ORDER,
    MAP_METHODS,
    METHOD_NAMES,
    applicable_methods,
    default_method,
    forward_mode,
    map_method,
    per_head_method,
    preferred_method,
)
from ssl_jax.models.config import bundled_spec
from ssl_jax.models.families import MODELS
from ssl_jax.workflows import shift
from ssl_jax.workflows.study.compare import primary_labels
from ssl_jax.workflows.study.config import ConfigError, StudyConfig

CLS_MODEL = ("cls", "cls_heads", "mean", "mean_heads", "rollout")
# written out from the code before the registry (extract.applicable_methods: no CLS → no
# cls / cls_heads / rollout; only SigLIP's MAP head has probe / probe_heads)
EXPECTED_METHODS = {
    "dinov2": CLS_MODEL,
    "dinov3": CLS_MODEL,
    "mae": CLS_MODEL,
    "clip": CLS_MODEL,
    "siglip2": ("mean", "mean_heads", "probe", "probe_heads"),
}
# shift.default_method and the scripts: "cls" if the model has a CLS token, else "mean"
EXPECTED_DEFAULT = {"dinov2": "cls", "dinov3": "cls", "mae": "cls", "clip": "cls",
                    "siglip2": "mean"}


def test_method_names_and_config_default():
    assert METHOD_NAMES == ("cls", "cls_heads", "mean", "mean_heads", "rollout", "probe",
                            "probe_heads")
    assert StudyConfig().methods == METHOD_NAMES
    assert tuple(ssl_jax.attention.MAP_METHODS) == METHOD_NAMES
    with pytest.raises(ConfigError, match=r"unknown method.*'gradcam'"):
        StudyConfig(methods=("cls", "gradcam"))


@pytest.mark.parametrize("alias", list(MODELS))
def test_every_study_model_gets_the_methods_it_got_before(alias):
    assert set(EXPECTED_METHODS) == set(MODELS)
    spec = bundled_spec(alias)
    assert applicable_methods(spec, METHOD_NAMES) == EXPECTED_METHODS[alias]
    assert default_method(spec) == EXPECTED_DEFAULT[alias]
    # the request's order is kept and only the model's methods survive
    assert applicable_methods(spec, ("rollout", "probe", "mean")) == tuple(
        m for m in ("rollout", "probe", "mean") if m in EXPECTED_METHODS[alias])
    for m in METHOD_NAMES:
        want = (spec.num_layers - 1,) if m.startswith("probe") else tuple(range(spec.num_layers))
        assert map_method(m).layers(spec) == want


def test_unknown_method_is_named():
    with pytest.raises(ValueError, match="unknown map method 'gradcam'"):
        map_method("gradcam")
    with pytest.raises(ValueError, match="gradcam"):
        applicable_methods(bundled_spec("clip"), ("cls", "gradcam"))


def test_method_fields():
    heads = {n for n, m in MAP_METHODS.items() if m.per_head}
    assert heads == {"cls_heads", "mean_heads", "probe_heads"}
    assert {n for n, m in MAP_METHODS.items() if m.needs_cls} == {"cls", "cls_heads", "rollout"}
    assert {n for n, m in MAP_METHODS.items() if m.needs_map_head} == {"probe", "probe_heads"}
    assert {n: per_head_method(n) for n in ("cls", "mean", "probe")} == {
        "cls": "cls_heads", "mean": "mean_heads", "probe": "probe_heads"}
    with pytest.raises(ValueError, match="rollout"):
        per_head_method("rollout")
    # the study's one forward pass serves every method
    assert forward_mode(METHOD_NAMES) == "full"
    assert all("full" in m.forward_modes for m in MAP_METHODS.values())
    assert MAP_METHODS["rollout"].forward_modes == ("rollout", "full")
    assert MAP_METHODS["mean"].forward_modes == ("full",)


def test_default_choice_among_available_methods():
    assert DEFAULT_ORDER == ("cls", "mean", "probe")
    assert preferred_method(["mean", "cls", "rollout"]) == "cls"
    assert preferred_method(["probe", "mean"]) == "mean"
    assert preferred_method(["probe", "rollout"]) == "probe"
    assert preferred_method(["rollout", "cls_heads"]) == "cls_heads"  # none of the order: by name
    with pytest.raises(ValueError):
        preferred_method([])
    # compare / report: one label per model, in sorted model order
    labels = ["siglip2/probe", "dinov2/rollout", "siglip2/mean", "dinov2/cls", "mae/rollout",
              "clip/mean", "clip/probe"]
    assert primary_labels(labels) == ["clip/mean", "dinov2/cls", "mae/rollout", "siglip2/mean"]


def _tiny(alias: str):
    model = ssl_jax.random_model(alias, 3)
    n = 2
    return model.replace(spec=dataclasses.replace(model.spec, num_layers=n),
                         params={**model.params, "blocks": jax.tree.map(
                             lambda a: a[:n], model.params["blocks"])})


@pytest.mark.slow
@pytest.mark.parametrize("alias", ["dinov2", "siglip2"])
def test_compute_is_the_maps_functions(alias):
    model = _tiny(alias)
    side = 2 * model.spec.patch_size * 2
    pixels = np.random.default_rng(0).uniform(-1, 1, (2, side, side, 3)).astype(np.float32)
    out = ssl_jax.forward(model, pixels, attentions="full")
    att, lay = out.attentions, out.layout
    want = {"cls": lambda: cls_map(att, lay), "cls_heads": lambda: cls_map(att, lay, fusion=None),
            "mean": lambda: mean_map(att, lay), "mean_heads": lambda: mean_map(att, lay, fusion=None),
            "rollout": lambda: rollout_map(att, lay, all_layers=True),
            "probe": lambda: probe_map(out.probe_attention, lay)[:, None],
            "probe_heads": lambda: probe_map(out.probe_attention, lay, fusion=None)[:, None]}
    for name in applicable_methods(model.spec, METHOD_NAMES):
        got = map_method(name).compute(out)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want[name]()), err_msg=name)
        m = map_method(name)
        assert got.shape[1] == len(m.layers(model.spec))
        assert got.ndim == 4 + m.per_head
        if m.kind in ("cls", "mean"):  # one layer: that layer's maps without the layer axis
            one = np.asarray(m.compute(out, layer=1))
            np.testing.assert_allclose(one, np.asarray(got[:, 1]), rtol=1e-6, atol=1e-9)
            if m.kind == "mean":  # bit for bit the map of that layer's attentions alone
                fusion = None if m.per_head else "mean"
                np.testing.assert_array_equal(one, np.asarray(mean_map(att[:, 1], lay,
                                                                       fusion=fusion)))
    if model.spec.pooler == "map":
        with pytest.raises(ValueError, match="no layer"):
            map_method("probe").compute(out, layer=1)


@pytest.mark.slow
def test_shift_heatmaps_take_a_fused_method_the_model_has():
    model = _tiny("clip")
    pixels = np.zeros((1, 32, 32, 3), np.float32)
    for bad in ("cls_heads", "probe"):
        with pytest.raises(ValueError, match=bad):
            shift.heatmaps(model, pixels, method=bad, size=8)
    assert shift.heatmaps(model, pixels, size=8).shape == (1, 8, 8)
