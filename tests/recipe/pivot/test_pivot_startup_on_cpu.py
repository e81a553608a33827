"""Start-up checks of a DPO run: each setting the DPO-as-policy-gradient equivalence needs is refused with its key."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf
from pivot_helpers import dpo_config, write_pairs

from recipe.pivot.startup import check_offline_rows, validate_dpo_run
from verl_ext.dpo import DPOConfig, DPOConfigError


def _valid(tmp_path, extra=()):
    train = write_pairs(tmp_path / "pairs.parquet", [("<answer>a</answer>", "<answer>b</answer>")])
    return dpo_config([f"data.train_files={train}", *extra])


def test_recipe_defaults_validate_and_reduce_to_plain_dpo(tmp_path):
    config = _valid(tmp_path)
    dpo = validate_dpo_run(config)
    assert (dpo.beta, dpo.pairs.source, dpo.skip_empty_update) == (0.1, "offline", True)
    actor = config.actor_rollout_ref.actor
    assert (actor.loss_agg_mode, actor.ppo_epochs, actor.kl_loss_coef, actor.entropy_coeff) == ("token-sum", 1, 0, 0)
    assert actor.ppo_mini_batch_size == config.data.train_batch_size and actor.freeze_vision_tower is False
    assert actor.fsdp_config.freeze_vision_tower is False  # tied to verl's own key


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("actor_rollout_ref.actor.ppo_epochs=2", "actor_rollout_ref.actor.ppo_epochs"),
        ("actor_rollout_ref.actor.ppo_mini_batch_size=8", "actor_rollout_ref.actor.ppo_mini_batch_size"),
        ("actor_rollout_ref.actor.loss_agg_mode=token-mean", "actor_rollout_ref.actor.loss_agg_mode"),
        ("actor_rollout_ref.actor.policy_loss.loss_mode=gspo", "actor_rollout_ref.actor.policy_loss.loss_mode"),
        ("actor_rollout_ref.actor.entropy_coeff=0.01", "actor_rollout_ref.actor.entropy_coeff"),
        ("actor_rollout_ref.actor.use_kl_loss=false", "actor_rollout_ref.actor.use_kl_loss"),
        ("actor_rollout_ref.actor.kl_loss_coef=0.04", "actor_rollout_ref.actor.kl_loss_coef"),
        ("algorithm.use_kl_in_reward=true", "algorithm.use_kl_in_reward"),
        ("algorithm.rollout_correction.bypass_mode=true", "algorithm.rollout_correction.bypass_mode"),
        ("algorithm.rollout_correction.rollout_is=token", "algorithm.rollout_correction.rollout_is"),
        ("actor_rollout_ref.rollout.temperature=0.7", "actor_rollout_ref.rollout.temperature"),
        ("algorithm.adv_estimator=grpo", "algorithm.adv_estimator"),
        ("trainer.v1.trainer_mode=sync", "trainer.v1.trainer_mode"),
        ("actor_rollout_ref.rollout.n=4", "actor_rollout_ref.rollout.n"),
        ("actor_rollout_ref.rollout.calculate_log_probs=true", "calculate_log_probs"),
        ("actor_rollout_ref.rollout.agent.default_agent_loop=single_turn_agent", "default_agent_loop"),
        ("dpo.beta=0", "dpo.beta"),
        ("+dpo.pairs.bogus=1", "dpo.pairs"),
    ],
)
def test_each_equivalence_condition_is_refused_with_its_key(tmp_path, override, key):
    with pytest.raises(DPOConfigError, match=key.replace(".", r"\.")):
        validate_dpo_run(_valid(tmp_path, [override]))


def test_online_source_needs_no_pair_columns_and_two_samples(tmp_path):
    rows = tmp_path / "rows.parquet"
    write_pairs(rows, [("a", "b")])
    config = dpo_config([f"data.train_files={rows}", "dpo.pairs.source=online", "actor_rollout_ref.rollout.n=8"])
    assert validate_dpo_run(config).pairs.source == "online"
    config = dpo_config([f"data.train_files={rows}", "dpo.pairs.source=online", "actor_rollout_ref.rollout.n=1"])
    with pytest.raises(DPOConfigError, match="online pairs need >= 2"):
        validate_dpo_run(config)


def test_offline_rows_are_checked(tmp_path):
    dpo = DPOConfig.from_dict({"pairs": {"source": "offline"}})
    assert check_offline_rows([write_pairs(tmp_path / "ok.parquet", [("a", "b"), ("c", "d")])], dpo) == 2
    with pytest.raises(DPOConfigError, match="row 1: chosen and rejected are the same"):
        check_offline_rows([write_pairs(tmp_path / "same.parquet", [("a", "b"), ("c", "c")])], dpo)
    with pytest.raises(DPOConfigError, match="row 0: empty"):
        check_offline_rows([write_pairs(tmp_path / "empty.parquet", [(" ", "b")])], dpo)
    import pandas as pd

    pd.DataFrame([{"prompt": "x"}]).to_parquet(tmp_path / "nocol.parquet")
    with pytest.raises(DPOConfigError, match=r"no column\(s\) \['chosen', 'rejected'\]"):
        check_offline_rows([str(tmp_path / "nocol.parquet")], dpo)


def test_freeze_key_reaches_the_engine_config_and_needs_the_recipe_target(tmp_path):
    from verl.utils.config import omega_conf_to_dataclass

    extra = [
        "actor_rollout_ref.actor.freeze_vision_tower=true",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
    ]
    config = _valid(tmp_path, extra)
    validate_dpo_run(config)
    engine = omega_conf_to_dataclass(config.actor_rollout_ref.actor).engine
    assert type(engine).__name__ == "PivotFSDPEngineConfig" and engine.freeze_vision_tower is True
    bad = _valid(
        tmp_path, [*extra, "actor_rollout_ref.actor.fsdp_config._target_=verl.workers.config.FSDPEngineConfig"]
    )
    with pytest.raises(DPOConfigError, match=r"fsdp_config\._target_=recipe\.pivot\.freeze"):
        validate_dpo_run(bad)
    fsdp1 = _valid(tmp_path, [*extra, "actor_rollout_ref.actor.strategy=fsdp"])
    with pytest.raises(DPOConfigError, match="use_orig_params"):
        validate_dpo_run(fsdp1)


def test_cpu_overlay_keeps_the_reference_and_lists_the_recipe_plugins(tmp_path):
    config = _valid(tmp_path, ["stand_in=cpu_tiny"])
    validate_dpo_run(config)
    env = OmegaConf.select(config, "ray_kwargs.ray_init.runtime_env.env_vars")
    assert list(env.VERL_USE_EXTERNAL_MODULES) == ["verl_ext.cpu", "recipe.pivot.plugins"]
    assert env.VERL_PLATFORM == "cpu" and config.actor_rollout_ref.actor.use_kl_loss is True


def test_engine_registry_selects_the_freezing_engine_on_every_vendor_key():
    from verl.workers.engine.base import EngineRegistry

    import recipe.pivot.freeze as freeze

    for backend in ("fsdp", "fsdp2"):
        registry = EngineRegistry._engines["language_model"][backend]
        for key in freeze.VENDOR_KEYS:
            assert registry[key] is freeze.FreezingFSDPEngine
    freeze.register()  # idempotent


def test_the_dpo_trainer_mode_checks_the_conditions_whichever_entry_point_started_it(tmp_path, monkeypatch):
    # verl's own main_ppo (plugins + trainer_mode=dpo) skips recipe/pivot/startup.py: the trainer mode checks itself
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    from recipe.pivot.trainer import DPOTrainer

    started = []
    monkeypatch.setattr(PPOTrainerSync, "__init__", lambda self, config: started.append(config))
    with pytest.raises(DPOConfigError, match=r"actor_rollout_ref\.actor\.loss_agg_mode='token-mean'"):
        DPOTrainer(config=_valid(tmp_path, ["actor_rollout_ref.actor.loss_agg_mode=token-mean"]))
    assert started == []  # refused before verl's trainer is built
    config = _valid(tmp_path)
    DPOTrainer(config=config)
    assert started == [config]


def test_rows_fewer_than_the_batch_are_refused_before_ray(tmp_path):
    # 3 pairs, batch 4: verl's dataloader (drop_last) has no batch -> ZeroDivisionError after Ray starts today
    train = write_pairs(tmp_path / "pairs.parquet", [("a", "b")] * 3)
    config = dpo_config([f"data.train_files={train}", "data.train_batch_size=4"])
    with pytest.raises(DPOConfigError, match=r"3 training rows .* < data.train_batch_size=4"):
        validate_dpo_run(config)
    validate_dpo_run(dpo_config([f"data.train_files={train}", "data.train_batch_size=3"]))


def test_overlong_pairs_and_prompts_are_counted_and_refused_above_the_share(tmp_path):
    from recipe.pivot.startup import check_data_sizes

    # the tiny tokenizer is byte-level: "x" * 30 is 30 tokens + the end-of-turn token = 31 > 24
    pairs = [("x" * 30, "b"), ("a", "b"), ("a", "b"), ("a", "b")]
    train = write_pairs(tmp_path / "pairs.parquet", pairs)
    base = [f"data.train_files={train}", "data.max_response_length=24"]
    with pytest.raises(DPOConfigError, match=r"1 of 4 \(25.0%\) offline pairs .* over the response length \(24"):
        validate_dpo_run(dpo_config(base))
    config = dpo_config([*base, "dpo.max_overlong_share=0.25"])  # 1/4 is not above 0.25
    assert check_data_sizes(config, validate_dpo_run(config)) == {
        "rows": 4,
        "long_prompts": 0,
        "pairs": 4,
        "long_pairs": 1,
    }
    # every prompt (an image is >= 4 vision tokens + the text) is over 8 tokens
    short = [f"data.train_files={train}", "data.max_prompt_length=8", "dpo.max_overlong_share=1"]
    with pytest.raises(DPOConfigError, match=r"4 of 4 \(100.0%\) prompts .* data.truncation=error would stop"):
        validate_dpo_run(dpo_config(short))
    with pytest.raises(DPOConfigError, match=r"0 training rows \(after verl's overlong-prompt filter\)"):
        validate_dpo_run(dpo_config([*short, "data.filter_overlong_prompts=true"]))
    with pytest.raises(DPOConfigError, match=r"4 of 4 \(100.0%\) prompts .* more than dpo.max_overlong_share=0.5"):
        validate_dpo_run(dpo_config([*short, "data.filter_overlong_prompts=true", "dpo.max_overlong_share=0.5"]))
