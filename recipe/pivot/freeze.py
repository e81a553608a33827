"""A working vision-encoder freeze for verl 0.9.1: an engine-config subclass and the smallest registered engine.

verl declares `actor_rollout_ref.actor.freeze_vision_tower` (verl/workers/config/actor.py) and reads it nowhere: the
vision tower always trains, in RL and in SFT. Here:

* `PivotFSDPEngineConfig` = verl's `FSDPEngineConfig` + `freeze_vision_tower` and `freeze_language_model`. verl builds
  engine configs from their `_target_` (hydra instantiate), so a config selects it with
  `...fsdp_config._target_=recipe.pivot.freeze.PivotFSDPEngineConfig` (RL; the recipe YAML does it and ties
  `fsdp_config.freeze_vision_tower` to verl's own `actor.freeze_vision_tower`) or `engine._target_=...` (verl's SFT
  trainer, `+engine.freeze_vision_tower=true`).
* `FreezingFSDPEngine` = verl's `FSDPEngineWithLMHead` whose `_build_module` freezes the chosen parts
  (`verl_ext.vision_freeze.freeze_parts`, i.e. `requires_grad_(False)`) before `_build_fsdp_module` wraps the module,
  and whose optimiser sees only the trainable parameters. With both flags off (or a plain `FSDPEngineConfig`) it is
  verl's engine unchanged.
* Registration: verl's `EngineRegistry.get_engine_cls` tries the `(device, vendor)` key before the vendor-less device
  key, so registering for `(cuda, nvidia)` (AMD falls back to it), `(npu, huawei)` and `(cpu, cpu)` (the CPU stand-in
  platform) selects this class without touching verl's own entries. Importing this module registers it; the
  `_target_` above imports it in every process that builds an engine config, before the engine is built.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from verl.workers.config import FSDPEngineConfig
from verl.workers.engine.base import EngineRegistry
from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead

from verl_ext.config_values import check_field_values
from verl_ext.vision_freeze import freeze_parts, trainable_parameters

logger = logging.getLogger(__name__)

CONFIG_TARGET = "recipe.pivot.freeze.PivotFSDPEngineConfig"
# (device, vendor) keys tried by verl before its own vendor-less cuda/npu entries; "cpu" is verl_ext.cpu's platform.
VENDOR_KEYS = (("cuda", "nvidia"), ("npu", "huawei"), ("cpu", "cpu"))


@dataclass
class PivotFSDPEngineConfig(FSDPEngineConfig):
    """verl's FSDP engine config plus which model parts the engine freezes before wrapping.

    Attributes:
        freeze_vision_tower: vision encoder (patch embedding + blocks) frozen; the projector (merger) still trains.
        freeze_language_model: LLM frozen (PIVOT stage 1 trains the projector alone).
    """

    freeze_vision_tower: bool = False
    freeze_language_model: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check_field_values(self, "fsdp_config", names=("freeze_vision_tower", "freeze_language_model"))


class _Trainable:
    """Stands in for the module in verl's `_build_optimizer`, which only calls `.parameters()`."""

    def __init__(self, module: Any) -> None:
        self._module = module

    def parameters(self):
        return iter(trainable_parameters(self._module))


class FreezingFSDPEngine(FSDPEngineWithLMHead):
    """verl's FSDP LM-head engine; freezes the configured parts before FSDP and optimises only the rest."""

    def _freeze_flags(self) -> tuple[bool, bool]:
        if self.engine_config.forward_only:  # reference / inference engines never step an optimiser
            return False, False
        return (
            bool(getattr(self.engine_config, "freeze_vision_tower", False)),
            bool(getattr(self.engine_config, "freeze_language_model", False)),
        )

    def _build_module(self):
        module = super()._build_module()
        vision, language = self._freeze_flags()
        if vision or language:
            frozen = freeze_parts(module, vision_tower=vision, language_model=language)
            logger.warning("pivot freeze: frozen parameter tensors per part %s", frozen)
            logger.warning(
                "pivot freeze: the recipe's engine subclass (recipe.pivot.freeze.FreezingFSDPEngine) froze them, "
                "the path for a verl without upstream/verl-0.9.1-freeze_vision_tower.patch (%s)",
                "this verl also honours actor.freeze_vision_tower itself"
                if "freeze_vision_tower" in FSDPEngineConfig.__dataclass_fields__
                else "this verl ignores actor.freeze_vision_tower",
            )
        return module

    def _build_optimizer(self, module):
        if any(self._freeze_flags()):
            return super()._build_optimizer(_Trainable(module))
        return super()._build_optimizer(module)


def register() -> None:
    """Register `FreezingFSDPEngine` for every `(device, vendor)` key of `VENDOR_KEYS` not taken yet (idempotent)."""
    registry = EngineRegistry._engines.setdefault("language_model", {})
    for backend in ("fsdp", "fsdp2"):
        for device, vendor in VENDOR_KEYS:
            if (device, vendor) in registry.get(backend, {}):
                continue
            EngineRegistry.register(model_type="language_model", backend=backend, device=device, vendor=vendor)(
                FreezingFSDPEngine
            )


register()
