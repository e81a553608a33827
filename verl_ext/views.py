"""The transformed view of a Qwen2.5-VL sample: T(x) from the original's processed pixels, same prompt and response.

The actor already holds what the processor made of the original image: `pixel_values` `[n_patches, C·Tp·P·P]`
(patches in the processor's merge-window order) and `image_grid_thw`. `patch_view` un-patchifies them back to the
processed image `[Tp, C, H, W]`, applies T, and patchifies again: the view is T applied to exactly the pixels the
model sees for the original, with the original's processor settings (pixel limits, `data.mm_processor_kwargs`).
Nothing but the transform's name and seed has to travel from the agent loop to the actor.

- Geometric transforms (rotations, flips) are pixel permutations; they commute with the per-channel normalisation and
  are applied to the normalised pixels directly — exact. A 90° turn of a non-square image swaps `(grid_h, grid_w)`;
  the image-token count does not change, so the token ids are reused and only the 3-D M-RoPE position ids are
  recomputed (`mrope_position_ids`, the model's own `get_rope_index`).
- Photometric transforms (e.g. stain jitter) get the un-normalised RGB in [0, 1] and are normalised again.
- A transform whose output is neither H × W nor W × H is resized (bicubic, antialiased) to whichever of the two is
  closer in aspect ratio, so the view keeps the original's image-token count (teacher forcing needs the same tokens).

`processor_view` is the other definition — the processor re-run on the transformed PIL image — kept as the reference:
for images the processor does not resize the two agree exactly; for resized images a 90° turn differs by the order of
resize and turn (measured in tests/verl_ext/test_views_on_cpu.py and bench/RESULTS.md).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from verl_ext.transforms import apply_transform, get_transform, run_transform


@dataclass(frozen=True)
class PatchLayout:
    """The processor's patch geometry and normalisation (Qwen2-VL image processor attributes of the same names)."""

    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    image_mean: tuple[float, ...] = (0.48145466, 0.4578275, 0.40821073)
    image_std: tuple[float, ...] = (0.26862954, 0.26130258, 0.27577711)

    @classmethod
    def from_processor(cls, image_processor: Any) -> PatchLayout:
        """Read the layout from a Qwen2-VL / Qwen2.5-VL image processor."""
        return cls(
            patch_size=int(image_processor.patch_size),
            temporal_patch_size=int(image_processor.temporal_patch_size),
            merge_size=int(image_processor.merge_size),
            image_mean=tuple(float(v) for v in image_processor.image_mean),
            image_std=tuple(float(v) for v in image_processor.image_std),
        )


def unpatchify(pixel_values: torch.Tensor, grid_thw: Sequence[int], layout: PatchLayout) -> torch.Tensor:
    """One image's patches `[t·h·w, C·Tp·P·P]` -> the processed image `[t, Tp, C, H, W]` (H = h·P, W = w·P)."""
    t, h, w = (int(v) for v in grid_thw)
    p, tp, m = layout.patch_size, layout.temporal_patch_size, layout.merge_size
    channels = pixel_values.shape[-1] // (tp * p * p)
    x = pixel_values.reshape(t, h // m, w // m, m, m, channels, tp, p, p)
    x = x.permute(0, 6, 5, 1, 3, 7, 2, 4, 8)  # [t, Tp, C, h/m, m, P, w/m, m, P]
    return x.reshape(t, tp, channels, h * p, w * p)


def patchify(image: torch.Tensor, layout: PatchLayout) -> tuple[torch.Tensor, list[int]]:
    """The inverse of `unpatchify`: `[t, Tp, C, H, W]` -> (`[t·h·w, C·Tp·P·P]`, [t, h, w])."""
    t, tp, channels, height, width = image.shape
    p, m = layout.patch_size, layout.merge_size
    h, w = height // p, width // p
    x = image.reshape(t, tp, channels, h // m, m, p, w // m, m, p)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)  # [t, h/m, w/m, m, m, C, Tp, P, P]
    return x.reshape(t * h * w, channels * tp * p * p), [t, h, w]


@functools.lru_cache(maxsize=256)
def _geometric_index(
    name: str, grid: tuple[int, int, int], columns: int, layout: PatchLayout
) -> tuple[torch.Tensor, tuple]:
    """(flat gather index, output grid) of a geometric transform on one image's patches (a pixel permutation).

    Computed once per (transform, grid) by running unpatchify → T → patchify on the element indices themselves.
    """
    n = grid[0] * grid[1] * grid[2]
    positions = torch.arange(n * columns, dtype=torch.float64).view(n, columns)  # exact up to 2^53 elements
    image = unpatchify(positions, grid, layout)
    moved = run_transform(name, image, torch.Generator())
    height, width = image.shape[-2:]
    if tuple(moved.shape[-2:]) not in ((height, width), (width, height)):
        return None
    flat, out_grid = patchify(moved.contiguous(), layout)
    return flat.reshape(-1).long(), tuple(out_grid)


def _fit_to_grid(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """`[..., H', W']` resized to (height, width) or (width, height), whichever is closer in aspect ratio."""
    out_h, out_w = image.shape[-2:]
    if (out_h, out_w) in ((height, width), (width, height)):
        return image
    ratio = out_w / out_h
    target = min(((height, width), (width, height)), key=lambda hw: abs(hw[1] / hw[0] - ratio))
    flat = image.reshape(-1, *image.shape[-3:]).float()  # [n, C, H', W']
    resized = torch.nn.functional.interpolate(flat, size=target, mode="bicubic", antialias=True, align_corners=False)
    return resized.reshape(*image.shape[:-2], *target).to(image.dtype)


def patch_view(
    pixel_values: torch.Tensor,
    image_grid_thw: torch.Tensor,
    transform: str,
    layout: PatchLayout,
    seed: int = 0,
    params: Mapping[str, Any] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """T applied to a sample's processed images: (`pixel_values` `[n_patches, C·Tp·P·P]`, `image_grid_thw` `[n, 3]`).

    Args:
        pixel_values: `[n_patches, C·Tp·P·P]` the original view's processed patches (all the sample's images).
        image_grid_thw: `[n_images, 3]` their grids (t, h, w) in patches.
        transform: a registered transform name.
        layout: the processor's patch geometry and normalisation.
        seed: the sample's seed for a stochastic transform (one generator per sample; images drawn in order).
        params: the transform's parameters (`domain.transforms.params.<name>`).

    Note:
        The paper does not say how the view is processed; here it is T applied after the processor's resize (the
        model's own input pixels, permuted or recoloured), not the processor re-run on T(x) (`processor_view`).
    """
    spec = get_transform(transform)
    generator = torch.Generator().manual_seed(int(seed))
    sizes = image_grid_thw.prod(-1).tolist()  # patches per image
    mean = torch.tensor(layout.image_mean, dtype=torch.float32).view(-1, 1, 1)  # [C, 1, 1]
    std = torch.tensor(layout.image_std, dtype=torch.float32).view(-1, 1, 1)  # [C, 1, 1]
    out_pixels, out_grids = [], []
    for patches, grid in zip(pixel_values.split(sizes), image_grid_thw.tolist(), strict=True):
        cached = (
            _geometric_index(transform, tuple(grid), patches.shape[-1], layout) if spec.kind == "geometric" else None
        )
        if cached is not None and not params:  # a pixel permutation: one gather with a cached index
            index, view_grid = cached
            out_pixels.append(torch.take(patches, index.to(patches.device)).view_as(patches))
            out_grids.append(list(view_grid))
            continue
        image = unpatchify(patches, grid, layout)  # [t, Tp, C, H, W]
        height, width = image.shape[-2:]
        if spec.kind == "geometric":
            view = run_transform(transform, image, generator, params)
        else:  # photometric: RGB in [0, 1], normalised again afterwards
            rgb = (image.float() * std.to(image.device) + mean.to(image.device)).clamp(0.0, 1.0)
            view = (run_transform(transform, rgb, generator, params) - mean.to(image.device)) / std.to(image.device)
        view = _fit_to_grid(view, height, width).to(pixel_values.dtype)
        flat, view_grid = patchify(view.contiguous(), layout)
        out_pixels.append(flat)
        out_grids.append(view_grid)
    return torch.cat(out_pixels), torch.tensor(out_grids, dtype=image_grid_thw.dtype)


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
    text[0, mask[0].bool()] = torch.arange(int(mask.sum()), device=ids.device)
    return torch.cat([text, vision[:, 0].to(text)], dim=0)  # [4, L]


def image_token_count(image_grid_thw: torch.Tensor, merge_size: int) -> int:
    """How many `<|image_pad|>` tokens the images of a grid take: Σ t·h·w / merge²."""
    return int(image_grid_thw.prod(-1).sum()) // (merge_size * merge_size)


def processor_view(
    processor: Any,
    images: Sequence[Image.Image],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    transform: str,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """The reference view: the model's processor re-run on the transformed PIL images, same token ids.

    Args:
        processor: a Qwen2.5-VL processor with `get_rope_index` bound (verl's `hf_processor` does this).
        images: the sample's original PIL images, in prompt order.
        input_ids: `[L]` prompt + response ids of the ORIGINAL view (reused unchanged).
        attention_mask: `[L]`.
        transform: a registered transform name.

    Returns:
        {"pixel_values", "image_grid_thw", "position_ids" `[4, L]`}.
    """
    transformed = [apply_transform(image, transform, seed=seed) for image in images]
    out = processor.image_processor(images=transformed, return_tensors="pt")
    pixels = {"pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"]}
    image_token_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    n_image_tokens = int((input_ids == image_token_id).sum())
    expected = image_token_count(pixels["image_grid_thw"], processor.image_processor.merge_size)
    if n_image_tokens != expected:
        raise ValueError(
            f"transform {transform!r} changes the image-token count ({n_image_tokens} -> {expected}); the "
            "transformed view would need new token ids. Check the processor's min/max_pixels are symmetric."
        )
    position_ids = mrope_position_ids(
        processor.get_rope_index, input_ids, attention_mask, pixels["image_grid_thw"], image_token_id
    )
    return {**pixels, "position_ids": position_ids}
