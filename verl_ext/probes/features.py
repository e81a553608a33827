"""Features of a vision encoder alone, per block, in raster order, at a fixed input size.

Qwen2.5-VL's vision tower (transformers 5.10) permutes the patch sequence into *window order* before its blocks
(`transformers.vision_utils.get_vision_window_index`: merge units of 2 x 2 patches grouped into windows of
`window_size` px), and every block output stays in that order; only the merger output is permuted back. On top, the
image processor emits patches grouped by merge unit (for each 2 x 2 block of patches: its four patches, row-major).
`window_to_raster` undoes both, so feature (i, j) of an image is the patch in row i, column j. Tested against a hand
computation and against the model's own merger + reverse permutation (`tests/verl_ext/probes`).

    encoder = load_vision_encoder("path/to/checkpoint")      # any HF Qwen2-VL-family checkpoint, offline
    feats = block_features(encoder, images, input_size=224)  # {block: [n, H, W, D]} (float32, CPU)
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

SAFETENSORS_INDEX = "model.safetensors.index.json"


def window_to_raster(hidden: torch.Tensor, grid_thw: torch.Tensor, window_index: torch.Tensor, merge: int) -> list:
    """Block outputs in window order -> one `[H, W, D]` raster grid per image.

    Args:
        hidden: `[seq, D]` a block's output for all images of the batch (window order).
        grid_thw: `[n_images, 3]` (t, h, w) patch grids (t must be 1: images).
        window_index: `[seq / merge²]` the window permutation of merge units (`get_vision_window_index`).
        merge: the spatial merge size (2).

    Returns:
        A list of `[h, w, D]` tensors, row-major patch grids.
    """
    unit = merge * merge
    seq, dim = hidden.shape
    reverse = torch.argsort(window_index.to(hidden.device))  # window order -> processor order (merge units)
    ordered = hidden.reshape(seq // unit, unit, dim)[reverse].reshape(seq, dim)  # [seq, D] processor order
    out, start = [], 0
    for t, h, w in grid_thw.tolist():
        if t != 1:
            raise ValueError(f"window_to_raster: images only (grid t=1), got t={t}")
        n = h * w
        grid = ordered[start : start + n].reshape(h // merge, w // merge, merge, merge, dim)  # [bh, bw, mh, mw, D]
        out.append(grid.permute(0, 2, 1, 3, 4).reshape(h, w, dim))  # [h, w, D]
        start += n
    return out


def raster_window_order(grid_hw: tuple[int, int], merge: int, window_size: int, patch_size: int) -> list[int]:
    """The raster index (row * w + col) of each token the blocks see, in their (window) order, for one image."""
    from transformers.vision_utils import get_vision_window_index

    h, w = grid_hw
    grid = torch.tensor([[1, h, w]])
    window_index, _ = get_vision_window_index(grid, merge, window_size, patch_size)
    raster = torch.arange(h * w).reshape(h // merge, merge, w // merge, merge).permute(0, 2, 1, 3)  # processor order
    processor_units = raster.reshape(-1, merge * merge)  # [units, 4]
    return processor_units[window_index].reshape(-1).tolist()


def _vision_keys(path: Path) -> dict[str, str]:
    """{checkpoint key: safetensors file} of the vision tower's tensors (`...visual.<name>`)."""
    index = path / SAFETENSORS_INDEX
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
    else:
        from safetensors import safe_open

        with safe_open(str(path / "model.safetensors"), "pt") as f:
            weight_map = {k: "model.safetensors" for k in f.keys()}
    return {k: v for k, v in weight_map.items() if "visual." in k}


def load_vision_encoder(path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """The vision tower of a local HF checkpoint (only its tensors are read), in eval mode.

    Raises:
        ValueError: no vision-tower tensors in the checkpoint, or they do not match its config.
    """
    from safetensors import safe_open

    path = Path(path)
    keys = _vision_keys(path)
    if not keys:
        raise ValueError(f"{path}: no vision-tower tensors ('...visual.*') in the checkpoint")
    encoder = random_vision_encoder(path, seed=0, dtype=dtype)
    state = {}
    for file in sorted(set(keys.values())):
        with safe_open(str(path / file), "pt") as f:
            for key in (k for k, v in keys.items() if v == file):
                state[key.split("visual.", 1)[1]] = f.get_tensor(key)
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path}: vision tensors do not match the config (missing {missing[:4]}, extra {unexpected[:4]})"
        )
    return encoder.to(dtype).eval()


def random_vision_encoder(
    path: str | os.PathLike, seed: int = 0, dtype: torch.dtype = torch.float32
) -> torch.nn.Module:
    """A randomly initialised vision tower of the checkpoint's architecture (the probes' floor), seeded."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(path)
    with torch.device("meta"):
        visual_cls = type(_visual(AutoModelForImageTextToText.from_config(config)))
    vision_config = config.vision_config
    if getattr(vision_config, "_attn_implementation", None) in (None, "flash_attention_2"):
        vision_config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    return visual_cls._from_config(vision_config).to(dtype).eval()


def _visual(model: torch.nn.Module) -> torch.nn.Module:
    for owner in (model, getattr(model, "model", None)):
        if owner is not None and hasattr(owner, "visual"):
            return owner.visual
    raise ValueError(f"{type(model).__name__} has no `visual` vision tower (a Qwen2-VL-family model is needed)")


def preprocess(processor: Any, images: Sequence[Any], input_size: int) -> dict[str, torch.Tensor]:
    """`pixel_values` and `image_grid_thw` of RGB images resized to `input_size` x `input_size` (a multiple of 28)."""
    if input_size % 28:
        raise ValueError(f"input size {input_size} must be a multiple of 28 (patch 14 x merge 2)")
    resized = [im.convert("RGB").resize((input_size, input_size)) for im in images]
    pixels = input_size * input_size
    out = processor(images=resized, size={"shortest_edge": pixels, "longest_edge": pixels}, return_tensors="pt")
    return {"pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"]}


@torch.no_grad()
def encode_blocks(
    encoder: torch.nn.Module, pixel_values: torch.Tensor, grid_thw: torch.Tensor, blocks: Sequence[int]
) -> dict[int, list[torch.Tensor]]:
    """{block: per-image `[h, w, D]` raster features} of one batch (forward hooks on the chosen blocks)."""
    from transformers.vision_utils import get_vision_window_index

    captured: dict[int, torch.Tensor] = {}
    hooks = [
        encoder.blocks[b].register_forward_hook(lambda _m, _i, out, b=b: captured.__setitem__(b, _first(out)))
        for b in blocks
    ]
    try:
        device = next(encoder.parameters()).device
        encoder(pixel_values.to(device, next(encoder.parameters()).dtype), grid_thw=grid_thw.to(device))
    finally:
        for hook in hooks:
            hook.remove()
    window_index, _ = get_vision_window_index(
        grid_thw, encoder.spatial_merge_size, encoder.window_size, encoder.patch_size
    )
    return {
        b: window_to_raster(captured[b].float(), grid_thw, window_index, encoder.spatial_merge_size) for b in blocks
    }


def _first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def block_features(
    encoder: torch.nn.Module,
    processor: Any,
    images: Sequence[Any],
    input_size: int,
    blocks: Sequence[int] | None = None,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 32,
    progress: Callable[[int], None] | None = None,
) -> dict[int, torch.Tensor]:
    """Features of every image per block, `{block: [n, ...]}` on the CPU.

    Args:
        encoder: a vision tower (`load_vision_encoder` / `random_vision_encoder`).
        processor: the checkpoint's image processor.
        images: PIL images (resized to `input_size`).
        input_size: side in pixels, a multiple of 28.
        blocks: block indices (default: all).
        reduce: applied to each image's `[h, w, D]` raster grid (e.g. mean pooling); default: keep the grid.
        batch_size: images per forward.
        progress: called with the number of images done in each batch.
    """
    blocks = list(range(len(encoder.blocks))) if blocks is None else list(blocks)
    reduce = reduce or (lambda grid: grid)
    out: dict[int, list[torch.Tensor]] = {b: [] for b in blocks}
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        inputs = preprocess(processor, chunk, input_size)
        for b, grids in encode_blocks(encoder, inputs["pixel_values"], inputs["image_grid_thw"], blocks).items():
            out[b].extend(reduce(g).cpu() for g in grids)
        if progress:
            progress(len(chunk))
    return {b: torch.stack(v) for b, v in out.items()}


def mean_pool_normalised(grid: torch.Tensor) -> torch.Tensor:
    """PIVOT's linear-probe feature: the mean over patches, L2-normalised (`grid` `[h, w, D]` -> `[D]`)."""
    pooled = grid.reshape(-1, grid.shape[-1]).mean(0)  # [D]
    return pooled / pooled.norm().clamp_min(1e-12)


def parse_blocks(spec: str, depth: int) -> list[int]:
    """`all`, `last`, `every:K` (every K-th block and the last) or a comma list (negative = from the end)."""
    if spec == "all":
        return list(range(depth))
    if spec == "last":
        return [depth - 1]
    if spec.startswith("every:"):
        k = int(spec.split(":", 1)[1])
        return sorted(set(range(k - 1, depth, k)) | {depth - 1})
    out = sorted({int(x) % depth for x in spec.split(",") if x.strip()})
    if not out:
        raise ValueError(f"no block in {spec!r}")
    return out
