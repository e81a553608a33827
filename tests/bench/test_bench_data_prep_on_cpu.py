"""bench/bench_data_prep.py's generated set: distinct crops (data_prep refuses byte-identical images under two labels,
and a set drawn per class with replacement had 44 such groups)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.bench_data_prep import SIDE, crop_specs


def test_crops_are_distinct_inside_the_scene_and_seeded():
    # a 300 x 280 scene has (300 - 256) x (280 - 256) x 4 turns = 44 x 24 x 4 = 4224 crops; take 4000 of them
    specs = crop_specs((300, 280), 4000)
    assert len({tuple(r) for r in specs.tolist()}) == 4000
    assert specs[:, 0].max() < 300 - SIDE and specs[:, 1].max() < 280 - SIDE and set(specs[:, 2]) <= {0, 1, 2, 3}
    assert np.array_equal(specs, crop_specs((300, 280), 4000))
    with pytest.raises(ValueError):  # more crops than the scene holds: refused, not repeated
        crop_specs((300, 280), 4225)
