"""Repairs of two verl 0.9.1 bugs the recipes' runs hit (plain GRPO too); each is a no-op once verl is fixed.

1. Text-only micro-batches of a Qwen2-VL / Qwen2.5-VL model crash: verl's `_get_input_embeds`
   (verl/models/transformers/qwen2_vl.py) runs the vision tower on a dummy image when a micro-batch has no image, so
   every FSDP rank takes part in the tower's all-gathers, and adds `0.0 * image_embeds.mean()`; with transformers 5 the
   tower returns a `BaseModelOutputWithPooling`, which has no `.mean()`. verl's own synthetic padding rows are
   text-only, so any micro-batch made only of them fails (`AttributeError: 'BaseModelOutputWithPooling' object has no
   attribute 'mean'`). The repair hands verl's function a view of the model whose `visual(...)` returns the unpacked
   embeddings (verl's own `unpack_visual_output`); image micro-batches go to verl's function unchanged.
2. Equal-length batches' 3-D position ids come back from TransferQueue ragged on the wrong dimension
   (`micro_batch.repair_position_ids`, applied by the recipe's worker).

Installed in every process by `recipe.common.plugins.install()`, which each recipe's plugin module calls, when verl
imports the module.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from verl_ext.import_hooks import when_imported

_QWEN2_VL = "verl.models.transformers.qwen2_vl"


class _UnpackedVisual:
    """The model as verl's `_get_input_embeds` sees it, with `visual(...)` returning a tensor."""

    def __init__(self, model: Any, unpack: Any) -> None:
        self._model, self._unpack = model, unpack

    def visual(self, *args: Any, **kwargs: Any) -> Any:
        return self._unpack(self._model.visual(*args, **kwargs))[0]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def fix_text_only_micro_batches(qwen2_vl: ModuleType) -> None:
    """Wrap `qwen2_vl._get_input_embeds` so a micro-batch without images works with transformers 5 (idempotent)."""
    original = qwen2_vl._get_input_embeds
    if getattr(original, "_domain_rft_fix", False):
        return
    from verl.utils.transformers_compat import unpack_visual_output

    def _get_input_embeds(model, input_ids, attention_mask=None, pixel_values=None, pixel_values_videos=None, *args):
        if pixel_values is None and pixel_values_videos is None:
            model = _UnpackedVisual(model, unpack_visual_output)
        return original(model, input_ids, attention_mask, pixel_values, pixel_values_videos, *args)

    _get_input_embeds._domain_rft_fix = True  # type: ignore[attr-defined]
    qwen2_vl._get_input_embeds = _get_input_embeds


def install() -> None:
    """Install the repairs when verl imports the modules they concern (now, if it already has)."""
    when_imported(_QWEN2_VL, fix_text_only_micro_batches)
