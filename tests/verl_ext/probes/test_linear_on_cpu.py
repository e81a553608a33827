"""Linear and segmentation probe fits, weight changes, probe data facts (hand-computed cases)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from verl_ext.probes.datasets import SPLITS, block_split
from verl_ext.probes.linear import accuracy, fit_probe, majority_baseline, mean_iou
from verl_ext.probes.weights import group_of, relative_change


def test_mean_iou_by_hand():
    true = np.array([0, 0, 1, 1, 2])
    pred = np.array([0, 1, 1, 1, 0])
    # class 0: inter 1 (idx 0), union {0,1,4} = 3 -> 1/3; class 1: inter 2, union {1,2,3} = 3 -> 2/3;
    # class 2: inter 0, union {4} -> 0. mean = (1/3 + 2/3 + 0) / 3 = 1/3
    assert mean_iou(pred, true, 3) == pytest.approx(1 / 3)
    assert accuracy(pred, true) == pytest.approx(3 / 5)


def test_probe_chooses_c_on_val_and_reports_test():
    # separable along x0 on train/val; test labels flipped: a probe that chose C on test could not score 0,
    # ours must (C is chosen on val, test is only reported)
    rng = np.random.default_rng(0)
    x = {s: rng.normal(size=(60, 4)) for s in SPLITS}
    y = {s: (x[s][:, 0] > 0).astype(int) for s in SPLITS}
    y["test"] = 1 - y["test"]
    res = fit_probe(x, y, grid=(0.1, 10.0))
    assert res.val > 0.9 and res.test < 0.1 and res.c in (0.1, 10.0)
    assert majority_baseline({"train": np.array([1, 1, 0]), "test": np.array([1, 0])}) == 0.5


def test_block_split_keeps_blocks_whole_and_is_seeded():
    split = block_split(8, 8, seed=0, block=4).reshape(8, 8)  # 4 blocks of 4 x 4 tiles
    for r in (0, 4):
        for c in (0, 4):
            assert len(set(split[r : r + 4, c : c + 4].ravel())) == 1
    assert np.array_equal(split, block_split(8, 8, seed=0, block=4).reshape(8, 8))
    assert set(block_split(40, 40, seed=1)) == set(SPLITS)


def test_relative_weight_change_by_hand():
    before = {"blocks.0.w": torch.tensor([3.0, 4.0]), "blocks.1.w": torch.tensor([1.0]), "merger.w": torch.ones(1)}
    after = {"blocks.0.w": torch.tensor([3.0, 4.5]), "blocks.1.w": torch.tensor([1.0]), "merger.w": torch.ones(1) * 2}
    # block 0: |Δ| = 0.5, |W| = 5 -> 0.1; block 1: 0; merger: 1/1
    assert relative_change(before, after) == pytest.approx({"block_0": 0.1, "block_1": 0.0, "merger": 1.0})
    assert group_of("model.visual.patch_embed.proj.weight") == "patch_embed"
    assert group_of("model.visual.blocks.12.attn.qkv.weight") == "block_12"
    with pytest.raises(ValueError, match="different vision tensors"):
        relative_change(before, {"blocks.0.w": torch.zeros(2)})
