"""recipe.common.modes: sync semantics under a new mode name; a config section parsed into its frozen dataclass."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from recipe.common.modes import SyncTrainerMode, parse_section
from verl_ext.config import DomainConfig, DomainConfigError
from verl_ext.dpo import DPOConfig, DPOConfigError


def test_sync_mode_reports_sync_whatever_name_selected_it() -> None:
    class Base:
        def __init__(self, name: str) -> None:
            self.trainer_mode = name  # what verl's PPOTrainer.__init__ does

    class Mode(SyncTrainerMode, Base):
        pass

    assert Mode("domain_grpo").trainer_mode == "sync" and Base("domain_grpo").trainer_mode == "domain_grpo"


def test_parse_section_defaults_values_interpolation_and_errors() -> None:
    assert parse_section(OmegaConf.create({}), "domain", DomainConfig) == DomainConfig()
    assert parse_section(OmegaConf.create({"domain": None}), "domain", DomainConfig) == DomainConfig()
    config = OmegaConf.create({"w": 0.5, "domain": {"constraint": {"weight": "${w}"}}, "dpo": {"beta": 0.2}})
    assert parse_section(config, "domain", DomainConfig).constraint.weight == 0.5  # resolved
    assert parse_section(config, "dpo", DPOConfig).beta == 0.2
    nested = OmegaConf.create({"actor_rollout_ref": {"domain": {"constraint": {"weight": 2.0}}}})
    assert parse_section(nested, "actor_rollout_ref.domain", DomainConfig).constraint.weight == 2.0  # dotted key
    assert parse_section({"dpo": {"beta": 0.3}}, "dpo", DPOConfig).beta == 0.3  # a plain dict
    with pytest.raises(DomainConfigError, match="domain.*typo"):
        parse_section(OmegaConf.create({"domain": {"typo": 1}}), "domain", DomainConfig)
    with pytest.raises(DPOConfigError, match="dpo.*typo"):
        parse_section(OmegaConf.create({"dpo": {"typo": 1}}), "dpo", DPOConfig)
