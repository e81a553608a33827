"""Transformed views: built from the processed pixels (`patch_view`) they equal the processor re-run on the transformed
image (`processor_view`) whenever the processor does not resize; for a resized image flips still agree exactly and a
90° turn differs by the order of resize and turn (bounded here, measured in bench/RESULTS.md)."""

import numpy as np
import pytest
import torch
from PIL import Image

from verl_ext.cpu.tiny_qwen25vl import build_tiny_model_dir
from verl_ext.transforms import DIHEDRAL_NAMES, apply_transform, draw_transform
from verl_ext.views import PatchLayout, mrope_position_ids, patch_view, patchify, processor_view, unpatchify


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    from verl.utils import hf_processor  # verl's loader binds the model's get_rope_index to the processor

    path = build_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model")
    return hf_processor(str(path))


def _image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _encode(processor, image, response: str = "<think>a</think><answer>forest</answer>"):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which scene?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    out = processor(text=[prompt + response], images=[image], return_tensors="pt")
    return out


def _reference_position_ids(processor, out):
    ids, mask = out["input_ids"], out["attention_mask"]
    vision, _ = processor.get_rope_index(
        input_ids=ids,
        mm_token_type_ids=out["mm_token_type_ids"],
        image_grid_thw=out["image_grid_thw"],
        attention_mask=mask,
    )
    return vision[:, 0]  # [3, L]


@pytest.mark.parametrize("size", [(112, 112), (168, 84), (100, 60)])  # square, 2:1, and one that is resized
@pytest.mark.parametrize("name", DIHEDRAL_NAMES)
def test_processor_view_equals_processor_on_transformed_image(processor, size, name):
    image = _image(*size)
    original = _encode(processor, image)
    direct = _encode(processor, apply_transform(image, name))
    # Same token ids for both views: the image-token count does not change under any transform.
    assert torch.equal(direct["input_ids"], original["input_ids"])
    view = processor_view(processor, [image], original["input_ids"][0], original["attention_mask"][0], name)
    assert torch.equal(view["pixel_values"], direct["pixel_values"])
    assert torch.equal(view["image_grid_thw"], direct["image_grid_thw"])
    assert torch.equal(view["position_ids"][1:], _reference_position_ids(processor, direct))
    assert torch.equal(view["position_ids"][0], torch.arange(original["input_ids"].shape[1]))


@pytest.mark.parametrize("size", [(112, 112), (168, 84), (56, 224)])  # sides multiples of 28: no resize
@pytest.mark.parametrize("name", DIHEDRAL_NAMES)
def test_patch_view_is_exact_when_the_processor_does_not_resize(processor, size, name):
    image = _image(*size)
    original = _encode(processor, image)
    direct = _encode(processor, apply_transform(image, name))
    layout = PatchLayout.from_processor(processor.image_processor)
    pixels, grid = patch_view(original["pixel_values"], original["image_grid_thw"], name, layout)
    assert torch.equal(grid, direct["image_grid_thw"])
    assert torch.equal(pixels, direct["pixel_values"])
    image_token = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    ids, mask = original["input_ids"][0], original["attention_mask"][0]
    positions = mrope_position_ids(processor.get_rope_index, ids, mask, grid, image_token)
    assert torch.equal(positions[1:], _reference_position_ids(processor, direct))


@pytest.mark.parametrize("size", [(100, 60), (100, 100), (242, 256)])  # resized by the processor
def test_patch_view_on_a_resized_image(processor, size):
    """Flips commute with the processor's resize; a 90° turn does not quite (resize then turn vs turn then resize).

    Measured on random-noise images (the worst case; real Sentinel-2 tiles: mean 0.26, max 16 grey levels): mean
    |difference| under 0.5 grey levels, max under 32 of 255. The recipe's view is the turned model input (an exact
    permutation of the pixels the model sees for x), not the processor re-run on the turned image.
    """
    image = _image(*size)
    original = _encode(processor, image)
    layout = PatchLayout.from_processor(processor.image_processor)
    grey = float(np.mean(layout.image_std)) * 255.0  # normalised units -> grey levels
    for name in ("hflip", "vflip", "rot180"):
        pixels, _ = patch_view(original["pixel_values"], original["image_grid_thw"], name, layout)
        assert torch.equal(pixels, _encode(processor, apply_transform(image, name))["pixel_values"])
    for name in ("rot90", "rot270", "transpose", "transverse"):
        pixels, grid = patch_view(original["pixel_values"], original["image_grid_thw"], name, layout)
        direct = _encode(processor, apply_transform(image, name))
        assert torch.equal(grid, direct["image_grid_thw"])
        difference = (pixels - direct["pixel_values"]).abs() * grey
        assert 0 < difference.mean() < 0.5 and difference.max() < 32


def test_patchify_inverts_unpatchify_and_matches_the_processor_layout(processor):
    image = _image(168, 84)
    out = _encode(processor, image)
    layout = PatchLayout.from_processor(processor.image_processor)
    grid = out["image_grid_thw"][0].tolist()
    pixels = unpatchify(out["pixel_values"], grid, layout)  # [1, Tp, 3, 84, 168]
    assert pixels.shape == (1, 2, 3, 84, 168)
    assert torch.equal(pixels[:, 0], pixels[:, 1])  # the processor duplicates a still image over the temporal patch
    mean = torch.tensor(layout.image_mean).view(3, 1, 1)
    std = torch.tensor(layout.image_std).view(3, 1, 1)
    expected = torch.from_numpy(np.asarray(image)).permute(2, 0, 1).float() / 255.0  # [3, 84, 168] (not resized)
    torch.testing.assert_close(pixels[0, 0] * std + mean, expected, atol=1e-6, rtol=0)
    again, again_grid = patchify(pixels, layout)
    assert torch.equal(again, out["pixel_values"]) and again_grid == grid


def test_rot90_on_non_square_swaps_grid_and_changes_positions(processor):
    image = _image(168, 84)  # w = 168, h = 84: grid (1, 6, 12) patches of 14 px
    original = _encode(processor, image)
    view = processor_view(processor, [image], original["input_ids"][0], original["attention_mask"][0], "rot90")
    assert original["image_grid_thw"].tolist() == [[1, 6, 12]]
    assert view["image_grid_thw"].tolist() == [[1, 12, 6]]
    assert not torch.equal(view["position_ids"][1:], _reference_position_ids(processor, original))
    flip = processor_view(processor, [image], original["input_ids"][0], original["attention_mask"][0], "vflip")
    assert torch.equal(flip["position_ids"][1:], _reference_position_ids(processor, original))
    assert not torch.equal(flip["pixel_values"], original["pixel_values"])


def test_transforms_are_lossless_permutations():
    image = _image(30, 20, seed=3)
    pixels = np.asarray(image)
    assert np.array_equal(np.asarray(apply_transform(image, "rot90")), np.rot90(pixels, 1))
    assert np.array_equal(np.asarray(apply_transform(image, "rot270")), np.rot90(pixels, 3))
    assert np.array_equal(np.asarray(apply_transform(image, "hflip")), pixels[:, ::-1])
    assert np.array_equal(np.asarray(apply_transform(image, "vflip")), pixels[::-1])
    assert np.array_equal(np.asarray(apply_transform(image, "transpose")), pixels.transpose(1, 0, 2))
    assert np.array_equal(np.asarray(apply_transform(image, "transverse")), np.rot90(pixels, 2).transpose(1, 0, 2))
    with pytest.raises(ValueError, match="unknown transform"):
        apply_transform(image, "rot45")


def test_draw_is_seeded_uniform_and_stays_in_candidates():
    candidates = ["rot90", "rot180", "rot270"]
    draws = [draw_transform(candidates, seed=0, step=s, row_key=f"uid{r}") for s in range(30) for r in range(20)]
    assert set(draws) == set(candidates)
    counts = [draws.count(c) for c in candidates]
    assert min(counts) > 150  # 600 draws over 3 choices: about 200 each
    again = [draw_transform(candidates, seed=0, step=s, row_key=f"uid{r}") for s in range(30) for r in range(20)]
    assert draws == again
    other_seed = [draw_transform(candidates, seed=1, step=s, row_key=f"uid{r}") for s in range(30) for r in range(20)]
    assert draws != other_seed
    with pytest.raises(ValueError, match="no candidate"):
        draw_transform([], seed=0, step=0, row_key="x")
