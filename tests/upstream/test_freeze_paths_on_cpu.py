"""The two ways `actor.freeze_vision_tower` works: verl patched with upstream/verl-0.9.1-freeze_vision_tower.patch, or
the recipe's engine subclass (recipe/pivot/freeze.py) on a stock verl, which says in the log that it is that path.

Runs against whichever verl is importable: stock 0.9.1 (`make test`) or the doubly patched copy that
upstream/prove_patch.py puts first on the path (there the patched-verl test runs too).
"""

import logging

import pytest
import torch
from verl.workers.config import FSDPEngineConfig
from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead

from recipe.pivot.freeze import FreezingFSDPEngine, PivotFSDPEngineConfig
from verl_ext.cpu.tiny_qwen25vl import build_config, build_tokenizer
from verl_ext.vision_freeze import freeze_parts

PATCHED = "freeze_vision_tower" in FSDPEngineConfig.__dataclass_fields__


def _tiny_model() -> torch.nn.Module:
    from transformers import Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(0)
    return Qwen2_5_VLForConditionalGeneration(build_config(build_tokenizer()))


def test_recipe_engine_says_it_is_the_path_for_an_unpatched_verl(monkeypatch, caplog):
    model = _tiny_model()
    monkeypatch.setattr(FSDPEngineWithLMHead, "_build_module", lambda self: model)
    engine = FreezingFSDPEngine.__new__(FreezingFSDPEngine)
    engine.engine_config = PivotFSDPEngineConfig(strategy="fsdp2", freeze_vision_tower=True)
    with caplog.at_level(logging.WARNING, logger="recipe.pivot.freeze"):
        assert engine._build_module() is model
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "the path for a verl without upstream/verl-0.9.1-freeze_vision_tower.patch" in text
    assert ("also honours actor.freeze_vision_tower" if PATCHED else "ignores actor.freeze_vision_tower") in text


def test_recipe_engine_logs_nothing_when_nothing_is_frozen(monkeypatch, caplog):
    monkeypatch.setattr(FSDPEngineWithLMHead, "_build_module", lambda self: _tiny_model())
    engine = FreezingFSDPEngine.__new__(FreezingFSDPEngine)
    engine.engine_config = PivotFSDPEngineConfig(strategy="fsdp2")
    with caplog.at_level(logging.WARNING, logger="recipe.pivot.freeze"):
        engine._build_module()
    assert not caplog.records


@pytest.mark.skipif(not PATCHED, reason="needs verl patched with upstream/ (upstream/prove_patch.py runs it there)")
def test_patched_verl_freezes_exactly_what_the_recipe_freezes():
    from verl.utils.model import freeze_vision_tower

    by_verl, by_recipe = _tiny_model(), _tiny_model()
    freeze_vision_tower(by_verl)
    freeze_parts(by_recipe, vision_tower=True)
    frozen_by_verl = {name for name, p in by_verl.named_parameters() if not p.requires_grad}
    frozen_by_recipe = {name for name, p in by_recipe.named_parameters() if not p.requires_grad}
    assert frozen_by_verl == frozen_by_recipe and frozen_by_verl
    assert not any("merger" in name for name in frozen_by_verl)  # the projector trains in both
