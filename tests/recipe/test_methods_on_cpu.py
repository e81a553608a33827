"""Every `method=<name>` of the config group composes, passes start-up validation, and sets the keys defining it."""

from __future__ import annotations

import pytest
from launch_helpers import RS_WHITELIST, compose_run, write_rows

from recipe.domain_grpo.augment import extras_from_config, validate_agent_extras
from recipe.domain_grpo.startup import training_row_whitelists, validate_run_config

WORKER = "recipe.domain_grpo.worker.DomainActorRolloutRefWorker"
# method -> (adv_estimator, trainer_mode, agent loop, worker, DC on, DR on, DC divergence, DR divergence)
DEFINING = {
    "dc_dr": ("domain_grpo", "domain_grpo", "domain_single_turn_agent", WORKER, True, True, "kl", "js"),
    "grpo": ("grpo", "sync", "domain_single_turn_agent", WORKER, False, False, "kl", "js"),
    "dc": ("domain_grpo", "domain_grpo", "domain_single_turn_agent", WORKER, True, False, "kl", "js"),
    "dr": ("domain_grpo", "domain_grpo", "domain_single_turn_agent", WORKER, False, True, "kl", "js"),
    "kl_kl": ("domain_grpo", "domain_grpo", "domain_single_turn_agent", WORKER, True, True, "kl", "kl"),
    "js_js": ("domain_grpo", "domain_grpo", "domain_single_turn_agent", WORKER, True, True, "js", "js"),
    "js_kl": ("domain_grpo", "domain_grpo", "domain_single_turn_agent", WORKER, True, True, "js", "kl"),
    "grpo_da": ("grpo", "sync", "domain_single_turn_agent", WORKER, False, False, "kl", "js"),
    "oc": ("grpo", "sync", "domain_single_turn_agent", WORKER, False, False, "kl", "js"),
}


def _defining(config) -> tuple:
    domain = config.domain
    return (
        config.algorithm.adv_estimator,
        config.trainer.v1.trainer_mode,
        config.actor_rollout_ref.rollout.agent.default_agent_loop,
        config.domain_recipe.actor_rollout_ref_worker,
        domain.constraint.enable,
        domain.shaping.enable,
        domain.constraint.divergence,
        domain.shaping.divergence,
    )


@pytest.mark.parametrize("stand_in", [None, "cpu_tiny"])
@pytest.mark.parametrize("method", list(DEFINING))
def test_method_composes_validates_and_is_what_it_says(tmp_path, method, stand_in):
    train = write_rows(tmp_path / "train.parquet", RS_WHITELIST)
    overrides = [f"method={method}", f"data.train_files={train}", "actor_rollout_ref.model.path=/m"]
    overrides += ["actor_rollout_ref.rollout.n=4"]
    overrides += [f"stand_in={stand_in}"] if stand_in else []
    overrides += ["reward.custom_reward_function.path=recipe/domain_grpo/oc_reward.py"] if method == "oc" else []
    config = compose_run(overrides)
    assert _defining(config) == DEFINING[method]
    validate_run_config(config)
    validate_agent_extras(config, training_row_whitelists(train))
    augment, oc = extras_from_config(config)
    assert (augment.enable, oc.enable) == (method == "grpo_da", method == "oc")
    if method == "oc":
        assert config.reward.custom_reward_function.reward_kwargs.oc_weight == 1.0
    if stand_in:
        assert config.trainer.device == "cpu" and config.actor_rollout_ref.rollout.name == "hf"


def test_default_method_is_the_papers():
    assert _defining(compose_run([])) == DEFINING["dc_dr"]


def test_unknown_method_is_a_hydra_error():
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match="method"):
        compose_run(["method=nosuch"])


def test_dc_on_rows_that_refuse_rotations_fails_at_startup(tmp_path):
    from verl_ext.config import DomainConfigError

    train = write_rows(tmp_path / "organ.parquet", ["identity", "vflip"])
    with pytest.raises(DomainConfigError, match="does not allow"):
        validate_run_config(compose_run(["method=dc", f"data.train_files={train}", "actor_rollout_ref.rollout.n=4"]))
