"""The transformed view of a Qwen2.5-VL sample: T(x) re-processed, same prompt and response tokens.

Rotating a non-square image by 90° swaps its height and width, so Qwen2.5-VL's patch grid (`image_grid_thw`) and its
3-D M-RoPE position ids change; the number of image tokens does not (`smart_resize` is symmetric in h and w), so the
token ids of prompt and response are reused unchanged. Flips and 180° keep the grid and the position ids; only
`pixel_values` change. The view is made by running the model's own image processor on the transformed PIL image —
exact, rather than permuting patchified pixels — and verl's convention for position ids `(4, L)`: one text row
(0..n−1 over attended tokens) above the three M-RoPE rows from the model's `get_rope_index`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from verl_ext.transforms import apply_transform


def transformed_pixel_inputs(image_processor: Any, images: Sequence[Image.Image], transform: str) -> dict:
    """`pixel_values` `[n_patches, C·T·P·P]` and `image_grid_thw` `[n_images, 3]` of the transformed images."""
    transformed = [apply_transform(image, transform) for image in images]
    out = image_processor(images=transformed, return_tensors="pt")
    return {"pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"]}


def mrope_position_ids(
    get_rope_index: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    image_grid_thw: torch.Tensor,
    image_token_id: int,
) -> torch.Tensor:
    """verl-layout position ids `(4, L)` for one sequence: a text row over the three M-RoPE rows.

    Args:
        get_rope_index: the model's `get_rope_index` (verl binds it to the processor: `processor.get_rope_index`).
        input_ids: `[L]` token ids (prompt + response).
        attention_mask: `[L]`.
        image_grid_thw: `[n_images, 3]` of the view whose positions are wanted.
        image_token_id: id of `<|image_pad|>` (marks image tokens for `mm_token_type_ids`).
    """
    ids, mask = input_ids.unsqueeze(0), attention_mask.unsqueeze(0)  # [1, L]
    mm_token_type_ids = (ids == image_token_id).to(torch.int32)  # [1, L]: 1 on image tokens
    vision, _ = get_rope_index(
        input_ids=ids, mm_token_type_ids=mm_token_type_ids, image_grid_thw=image_grid_thw, attention_mask=mask
    )  # [3, 1, L]
    text = torch.ones_like(ids)  # [1, L]
    text[0, mask[0].bool()] = torch.arange(int(mask.sum()))
    return torch.cat([text, vision[:, 0]], dim=0)  # [4, L]


def transformed_view(
    processor: Any,
    images: Sequence[Image.Image],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    transform: str,
) -> dict[str, torch.Tensor]:
    """Everything the actor needs to run the policy on T(x) teacher-forced on the same tokens.

    Args:
        processor: a Qwen2.5-VL processor with `get_rope_index` bound (verl's `hf_processor` does this).
        images: the sample's original PIL images, in prompt order.
        input_ids: `[L]` prompt + response ids of the ORIGINAL view (reused unchanged).
        attention_mask: `[L]`.
        transform: a name from `verl_ext.transforms.TRANSFORM_NAMES`.

    Returns:
        {"pixel_values", "image_grid_thw", "position_ids" `[4, L]`}.
    """
    pixels = transformed_pixel_inputs(processor.image_processor, images, transform)
    image_token_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    n_image_tokens = int((input_ids == image_token_id).sum())
    merge = processor.image_processor.merge_size
    expected = int(pixels["image_grid_thw"].prod(-1).sum()) // (merge * merge)
    if n_image_tokens != expected:
        raise ValueError(
            f"transform {transform!r} changes the image-token count ({n_image_tokens} -> {expected}); the "
            "transformed view would need new token ids. Check the processor's min/max_pixels are symmetric."
        )
    position_ids = mrope_position_ids(
        processor.get_rope_index, input_ids, attention_mask, pixels["image_grid_thw"], image_token_id
    )
    return {**pixels, "position_ids": position_ids}
