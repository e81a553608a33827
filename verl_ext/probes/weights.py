"""How far training moved each part of the vision encoder: ‖W_after − W_before‖ / ‖W_before‖ per block."""

from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path

import torch

from verl_ext.probes.features import _vision_keys

_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.")


def group_of(name: str) -> str:
    """`block_<i>`, `patch_embed`, `merger` or `other` for a vision-tower tensor name (prefix up to `visual.` cut)."""
    local = name.split("visual.", 1)[-1]
    match = _BLOCK.search("." + local)
    if match:
        return f"block_{int(match.group(1))}"
    for group in ("patch_embed", "merger"):
        if local.startswith(group):
            return group
    return "other"


def vision_state(path: str | os.PathLike, cast: torch.dtype | None = torch.float32) -> dict[str, torch.Tensor]:
    """The vision tensors (`...visual.*`, projector included) of a local HF checkpoint, keyed by their name after
    `visual.`, cast to `cast` (None: as stored)."""
    from safetensors import safe_open

    path = Path(path)
    keys = _vision_keys(path)
    out = {}
    for file in sorted(set(keys.values())):
        with safe_open(str(path / file), "pt") as f:
            for key in (k for k, v in keys.items() if v == file):
                tensor = f.get_tensor(key)
                out[key.split("visual.", 1)[1]] = tensor if cast is None else tensor.to(cast)
    return out


def relative_change(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> dict[str, float]:
    """{group: ‖Δ‖_F / ‖W_before‖_F} over the tensors of each group (`group_of`); groups in model order.

    Raises:
        ValueError: the two states have different tensor names or shapes.
    """
    if set(before) != set(after):
        raise ValueError(f"different vision tensors: {sorted(set(before) ^ set(after))[:4]}")
    diff, norm = defaultdict(float), defaultdict(float)
    for name, w in before.items():
        if w.shape != after[name].shape:
            raise ValueError(f"{name}: shape {tuple(w.shape)} vs {tuple(after[name].shape)}")
        g = group_of(name)
        diff[g] += float(((after[name] - w) ** 2).sum())
        norm[g] += float((w**2).sum())

    def order(g: str) -> tuple[int, int]:
        if g == "patch_embed":
            return (0, 0)
        if g.startswith("block_"):
            return (1, int(g.split("_")[1]))
        return (2, 0) if g == "merger" else (3, 0)

    return {g: (diff[g] ** 0.5) / max(norm[g] ** 0.5, 1e-12) for g in sorted(diff, key=order)}
