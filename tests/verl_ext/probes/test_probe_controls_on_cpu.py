"""The probes' controls: the layout sets colour cannot solve, the trivial colour features, a user's parquet."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from verl_ext.probes.datasets import SPLITS, digits_rot4, s2_greener_half
from verl_ext.probes.probes import limit_splits
from verl_ext.probes.trivial import colour_features, patch_colour, pixels, trivial_linear


def test_colour_features_and_patch_colour_by_hand():
    rgb = np.zeros((1, 28, 28, 3))
    rgb[0, :14, :, 0] = 1.0  # top half red
    # mean R = 0.5, std R = 0.5 (half 0, half 1); G, B 0
    assert colour_features(rgb, with_std=True).tolist() == [[0.5, 0.0, 0.0, 0.5, 0.0, 0.0]]
    cells = patch_colour(rgb)  # 2 x 2 patches of 14 px: the top row red
    assert cells.shape == (1, 2, 2, 3) and cells[0, :, :, 0].tolist() == [[1.0, 1.0], [0.0, 0.0]]


def test_greener_half_pairs_a_tile_with_its_mirror_so_colour_is_exactly_chance():
    probe = s2_greener_half(seed=0)
    assert len(probe.images) % 2 == 0 and set(probe.labels) == {0, 1}
    first, mirror = np.asarray(probe.images[0]), np.asarray(probe.images[1])
    assert np.array_equal(first[:, ::-1], mirror) and probe.labels[0] != probe.labels[1]
    assert probe.split[0] == probe.split[1] and probe.groups[0] == probe.groups[1]
    rows = trivial_linear(probe, limit_splits(probe, None), 56, grid=(1.0, 100.0))
    # identical colour features, opposite labels: every pair contributes exactly one right answer on test
    for row in rows.values():
        assert row["blocks"]["0"]["test"] == pytest.approx(0.5, abs=1e-12)


def test_rotation_set_is_a_pixel_permutation():
    probe = digits_rot4(seed=0)
    assert set(probe.labels) == {0, 1, 2, 3} and set(probe.split) == set(SPLITS)
    k = int(np.flatnonzero(probe.labels == 1)[0])
    image = np.asarray(probe.images[k])
    assert sorted(image.ravel()) == sorted(np.asarray(Image.fromarray(image).rotate(-90)).ravel())


def test_pixels_resize_to_the_input_size():
    im = Image.fromarray(np.full((10, 20, 3), 255, np.uint8))
    assert pixels([im], 28).shape == (1, 28, 28, 3) and pixels([im], 28).max() == 1.0
