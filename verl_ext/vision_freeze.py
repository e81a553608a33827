"""The three parts of a vision-language model, and freezing them on purpose (torch only, no verl import).

PIVOT (arXiv 2510.16333) trains the vision encoder with DPO or SFT, then transplants it, frozen, under a fresh
projector and trains projector (stage 1) then projector + LLM (stage 2). verl 0.9.1 declares
`actor.freeze_vision_tower` and reads it nowhere; `recipe/pivot/freeze.py` makes it (and `freeze_language_model`)
work through a registered engine subclass that calls :func:`freeze_parts` before FSDP wraps the module. The verl fix,
`upstream/verl-0.9.1-freeze_vision_tower.patch`, freezes the same parameters (`verl.utils.model.freeze_vision_tower`;
checked equal in `tests/upstream/test_freeze_paths_on_cpu.py`); the recipe's path stays for an unpatched verl.

Parts, by parameter name (Qwen2-VL / Qwen2.5-VL / Qwen3-VL naming, and LLaVA-style for the projector):

* `projector`: `visual.merger.*`, `visual.deepstack_merger_list.*`, `multi_modal_projector.*`;
* `vision_tower`: the rest of `visual.*` / `vision_tower.*` (patch embedding and blocks);
* `language_model`: everything else (embeddings, decoder, norm, LM head).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

PARTS = ("vision_tower", "projector", "language_model")
_PROJECTOR_MARKERS = ("visual.merger.", "visual.deepstack_merger_list.", "multi_modal_projector.")
_VISION_MARKERS = ("visual.", "vision_tower.", "vision_model.")


def part_of(name: str) -> str:
    """The part (`PARTS`) a parameter or state-dict key belongs to, from its name."""
    padded = "." + name
    if any("." + m in padded for m in _PROJECTOR_MARKERS):
        return "projector"
    if any("." + m in padded for m in _VISION_MARKERS):
        return "vision_tower"
    return "language_model"


def split_names(names: Iterable[str]) -> dict[str, list[str]]:
    """Names grouped by part, every part present (possibly empty)."""
    out: dict[str, list[str]] = {p: [] for p in PARTS}
    for name in names:
        out[part_of(name)].append(name)
    return out


def freeze_parts(model: torch.nn.Module, vision_tower: bool = False, language_model: bool = False) -> dict[str, int]:
    """Set `requires_grad=False` on the chosen parts (before FSDP wraps the model); return frozen counts per part.

    Args:
        model: the HF model (e.g. `Qwen2_5_VLForConditionalGeneration`), not yet wrapped.
        vision_tower: freeze the vision encoder (patch embedding + blocks; the projector stays trainable).
        language_model: freeze the LLM (embeddings, decoder, norm, LM head; tied weights are one parameter).

    Returns:
        {part: number of parameter tensors frozen}.

    Raises:
        ValueError: a part asked to be frozen has no parameters (not a vision-language model this module knows), or
            nothing would remain trainable.

    Note:
        The projector is never frozen here: both PIVOT stages train it.
    """
    wanted = {"vision_tower": vision_tower, "language_model": language_model}
    groups = split_names(name for name, _ in model.named_parameters())
    for part, on in wanted.items():
        if on and not groups[part]:
            raise ValueError(f"freeze {part}: the model has no {part} parameters (names: {_sample_names(model)})")
    frozen = {part: 0 for part in PARTS}
    for name, param in model.named_parameters():
        part = part_of(name)
        if wanted.get(part, False):
            param.requires_grad_(False)
            frozen[part] += 1
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("freezing these parts leaves no trainable parameter")
    return frozen


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters an optimiser should see: those that still require a gradient."""
    return [p for p in model.parameters() if p.requires_grad]


def _sample_names(model: torch.nn.Module, k: int = 4) -> list[str]:
    return [name for name, _ in list(model.named_parameters())[:k]]
