"""Run records: the spec JSON round trip and the HF export key map inversion."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from ssl_jax.io.runs import params_to_state_dict, spec_from_json, spec_to_json
from ssl_jax.models.config import bundled_spec
from ssl_jax.models.convert import convert_state_dict
from ssl_jax.models.families import MODELS
from tests.support.tiny import tiny


@pytest.mark.parametrize("alias", list(MODELS))
def test_spec_json_and_export_key_map_round_trip(alias):
    spec = bundled_spec(alias)
    assert spec_from_json(spec_to_json(spec)) == spec
    m = tiny(alias, num_layers=2)
    sd = params_to_state_dict(m.spec, m.params)
    back = convert_state_dict(m.spec, sd)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(m.params), strict=True):
        np.testing.assert_array_equal(a, np.asarray(b))
