"""Rollouts lost to failed requests are counted (and warned about, or stop the run) by every recipe's trainer mode."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from recipe.common.lost_rollouts import (
    LostRolloutsError,
    check_lost_rollouts,
    lost_rollout_counts,
    lost_rollouts_policy,
)
from recipe.common.modes import SyncTrainerMode

UID_A, UID_B = "0f3e2d1c-aaaa-4bbb-8ccc-000000000001", "0f3e2d1c-aaaa-4bbb-8ccc-000000000002"


def test_complete_groups_lose_nothing():
    keys = [f"{uid}_{s}_0" for uid in (UID_A, UID_B) for s in range(4)]  # 2 prompts x n=4, all there
    assert lost_rollout_counts(keys, 4) == {"recipe/lost_rollouts": 0, "recipe/incomplete_groups": 0}


def test_a_failed_session_is_counted_once_per_missing_response():
    # prompt A: sessions 0, 1, 3 (2 failed) -> 1 lost; prompt B: session 0 only -> 3 lost; 2 incomplete prompts
    keys = [f"{UID_A}_{s}_0" for s in (0, 1, 3)] + [f"{UID_B}_0_0"]
    assert lost_rollout_counts(keys, 4) == {"recipe/lost_rollouts": 4, "recipe/incomplete_groups": 2}


def test_several_outputs_of_one_session_count_as_one_response():
    keys = [f"{UID_A}_0_0", f"{UID_A}_0_1", f"{UID_A}_0_2", f"{UID_A}_1_0"]  # a multi-output agent loop, n=2
    assert lost_rollout_counts(keys, 2) == {"recipe/lost_rollouts": 0, "recipe/incomplete_groups": 0}


def test_verls_padding_is_not_a_group():
    # verl pads with one uid `pad<hex>` and sessions 0..k-1 (padding_utils.py): 2 padding keys, n=4, not lost
    keys = [f"{UID_A}_{s}_0" for s in range(4)] + ["padabc_0_0", "padabc_1_0"]
    tags = [{}] * 4 + [{"is_padding": True}] * 2
    assert lost_rollout_counts(keys, 4, tags)["recipe/lost_rollouts"] == 0
    assert lost_rollout_counts(keys, 4)["recipe/lost_rollouts"] == 2  # the same keys untagged: a short group


def test_policy_warns_or_stops(caplog):
    keys = [f"{UID_A}_0_0"]
    with caplog.at_level(logging.WARNING):
        assert check_lost_rollouts(keys, 2, "warn", step=3)["recipe/lost_rollouts"] == 1
    assert "step 3: 1 of the step's responses were lost" in caplog.text
    with pytest.raises(LostRolloutsError, match="domain_recipe.lost_rollouts=warn"):
        check_lost_rollouts(keys, 2, "error")


def test_policy_key_is_checked():
    assert lost_rollouts_policy(OmegaConf.create({})) == "warn"
    assert lost_rollouts_policy(OmegaConf.create({"domain_recipe": {"lost_rollouts": "error"}})) == "error"
    with pytest.raises(ValueError, match="domain_recipe.lost_rollouts='ignore': choose one of warn, error"):
        lost_rollouts_policy(OmegaConf.create({"domain_recipe": {"lost_rollouts": "ignore"}}))


class _VerlTrainer:
    """Stands in for verl's PPOTrainerSync: its `_compute_advantage` is what the mode hands on to."""

    def _compute_advantage(self, batch, metrics):
        metrics["verl"] = True
        return batch


class _Mode(SyncTrainerMode, _VerlTrainer):
    def __init__(self, policy: str):
        self.config = OmegaConf.create(
            {"actor_rollout_ref": {"rollout": {"n": 2}}, "domain_recipe": {"lost_rollouts": policy}}
        )
        self.global_steps = 5


def test_every_recipe_mode_counts_before_verls_advantage():
    batch = SimpleNamespace(keys=[f"{UID_A}_0_0", f"{UID_A}_1_0", f"{UID_B}_1_0"], tags=[{}, {}, {}])
    metrics: dict = {}
    assert _Mode("warn")._compute_advantage(batch, metrics) is batch
    assert metrics == {"recipe/lost_rollouts": 1, "recipe/incomplete_groups": 1, "verl": True}
    with pytest.raises(LostRolloutsError, match="step 5"):
        _Mode("error")._compute_advantage(batch, {})


def test_the_recipes_agent_config_accepts_the_key_and_refuses_a_bad_value():
    # the agent loop's strict parse of `domain_recipe` (recipe/domain_grpo/augment.py) knows the key
    from recipe.domain_grpo.augment import AgentExtrasConfigError, extras_from_config

    extras_from_config(OmegaConf.create({"domain_recipe": {"lost_rollouts": "error"}}))
    with pytest.raises(AgentExtrasConfigError, match="domain_recipe.lost_rollouts='drop': choose one of warn, error"):
        extras_from_config(OmegaConf.create({"domain_recipe": {"lost_rollouts": "drop"}}))
