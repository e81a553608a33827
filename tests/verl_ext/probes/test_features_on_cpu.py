"""Raster order of Qwen2.5-VL's block outputs (hand computation, and the model's own merger + reverse permutation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from verl_ext.probes.features import (
    block_features,
    encode_blocks,
    load_vision_encoder,
    mean_pool_normalised,
    parse_blocks,
    preprocess,
    random_vision_encoder,
    raster_window_order,
    window_to_raster,
)


def test_window_order_by_hand():
    # 4 x 8 patches, merge 2 -> 2 x 4 merge units; window 56 px / 14 / 2 = 2 x 2 units per window:
    # window A = unit columns 0-1, window B = columns 2-3. Units (r, c) in window order: (0,0) (0,1) (1,0) (1,1),
    # (0,2) (0,3) (1,2) (1,3); each unit lists its patches (2r+mh, 2c+mw) row-major, raster index = 8 * row + col.
    # unit (0,0): 0 1 8 9 | (0,1): 2 3 10 11 | (1,0): 16 17 24 25 | (1,1): 18 19 26 27
    # unit (0,2): 4 5 12 13 | (0,3): 6 7 14 15 | (1,2): 20 21 28 29 | (1,3): 22 23 30 31
    expected = [0, 1, 8, 9, 2, 3, 10, 11, 16, 17, 24, 25, 18, 19, 26, 27]
    expected += [4, 5, 12, 13, 6, 7, 14, 15, 20, 21, 28, 29, 22, 23, 30, 31]
    assert raster_window_order((4, 8), merge=2, window_size=56, patch_size=14) == expected


def test_window_to_raster_inverts_the_window_order():
    from transformers.vision_utils import get_vision_window_index

    grid = torch.tensor([[1, 4, 8], [1, 8, 8]])  # two images in one batch (offsets across images)
    window_index, _ = get_vision_window_index(grid, 2, 56, 14)
    seqs = [raster_window_order((4, 8), 2, 56, 14), raster_window_order((8, 8), 2, 56, 14)]
    # feature = (image id, raster index), laid out in the blocks' (window) order
    hidden = torch.tensor([[float(i), float(r)] for i, seq in enumerate(seqs) for r in seq])  # [96, 2]
    grids = window_to_raster(hidden, grid, window_index, merge=2)
    for i, (g, (h, w)) in enumerate(zip(grids, [(4, 8), (8, 8)])):
        assert g.shape == (h, w, 2)
        assert torch.equal(g[..., 0], torch.full((h, w), float(i)))
        assert torch.equal(g[..., 1], torch.arange(h * w, dtype=torch.float).reshape(h, w))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoImageProcessor

    from verl_ext.cpu.tiny_qwen25vl import build_tiny_model_dir

    path = build_tiny_model_dir(tmp_path_factory.mktemp("m") / "model")
    return path, load_vision_encoder(path), AutoImageProcessor.from_pretrained(path, backend="pil")


def _images(n, size=112, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def test_raster_features_agree_with_the_models_merger_and_reverse(tiny):
    # The model merges consecutive window-order patches and only then reverses the window permutation; merging our
    # raster grid's 2 x 2 blocks (row-major over the merge grid) must give its pooler output exactly.
    _, encoder, processor = tiny
    inputs = preprocess(processor, _images(2), 112)
    assert inputs["image_grid_thw"].tolist() == [[1, 8, 8], [1, 8, 8]]
    last = len(encoder.blocks) - 1
    feats = encode_blocks(encoder, inputs["pixel_values"], inputs["image_grid_thw"], [last])[last]
    with torch.no_grad():
        pooled = encoder(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"]).pooler_output  # [2 * 16, D']
    for i, grid in enumerate(feats):
        units = grid.reshape(4, 2, 4, 2, -1).permute(0, 2, 1, 3, 4).reshape(16, -1)  # [16 units, 4 * D]
        mine = encoder.merger(units.reshape(64, -1))
        assert torch.allclose(mine, pooled[16 * i : 16 * (i + 1)], atol=1e-6)


def test_block_features_pooled_normalised_and_random_floor_differs(tmp_path, tiny):
    path, encoder, processor = tiny
    feats = block_features(encoder, processor, _images(3), 112, reduce=mean_pool_normalised, batch_size=2)
    assert sorted(feats) == list(range(len(encoder.blocks)))
    assert all(f.shape == (3, 32) for f in feats.values())
    assert torch.allclose(feats[0].norm(dim=-1), torch.ones(3), atol=1e-6)
    floor = random_vision_encoder(path, seed=1234)
    assert not torch.equal(next(floor.parameters()), next(encoder.parameters()))


def test_loader_refuses_a_checkpoint_without_vision_weights(tmp_path, tiny):
    from safetensors.torch import load_file, save_file

    path = tiny[0]
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((path / "config.json").read_text())
    save_file(
        {k: v for k, v in load_file(path / "model.safetensors").items() if "visual." not in k},
        broken / "model.safetensors",
    )
    with pytest.raises(ValueError, match="no vision-tower tensors"):
        load_vision_encoder(broken)
    with pytest.raises(ValueError, match="multiple of 28"):
        preprocess(tiny[2], _images(1), 100)


def test_parse_blocks():
    assert parse_blocks("all", 4) == [0, 1, 2, 3]
    assert parse_blocks("last", 4) == [3]
    assert parse_blocks("every:3", 8) == [2, 5, 7]
    assert parse_blocks("0,-1", 8) == [0, 7]
