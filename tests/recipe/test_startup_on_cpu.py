"""Start-up validation of the recipe: the domain config against estimator, group size and the rows' whitelists."""

import pandas as pd
import pytest
from omegaconf import OmegaConf

from recipe.domain_grpo.startup import training_row_whitelists, validate_run_config
from verl_ext.config import DomainConfigError


def _parquet(path, whitelists):
    rows = [{"extra_info": {"index": i, "transforms": w}} for i, w in enumerate(whitelists)]
    pd.DataFrame(rows).to_parquet(path)
    return str(path)


def _config(train_files, adv="domain_grpo", n=4, domain=None):
    return OmegaConf.create(
        {
            "algorithm": {"adv_estimator": adv},
            "actor_rollout_ref": {"rollout": {"n": n}},
            "data": {"train_files": train_files},
            "domain": domain or {},
        }
    )


def test_valid_remote_sensing_run(tmp_path):
    files = _parquet(tmp_path / "rs.parquet", [["identity", "rot90", "rot180", "rot270", "hflip", "vflip"]] * 3)
    domain = validate_run_config(_config(files))
    assert domain.transforms.names == ("rot90", "rot180", "rot270")
    assert training_row_whitelists([files, files]) == [["identity", "rot90", "rot180", "rot270", "hflip", "vflip"]] * 6


def test_medical_rows_refuse_a_rotation_they_do_not_allow(tmp_path):
    files = _parquet(tmp_path / "organ.parquet", [["identity", "vflip"]])
    with pytest.raises(DomainConfigError, match=r"includes \['rot180', 'rot270', 'rot90'\]"):
        validate_run_config(_config(files))
    validate_run_config(_config(files, domain={"transforms": {"names": ["vflip"]}}))


def test_group_size_one_and_missing_whitelist_fail(tmp_path):
    files = _parquet(tmp_path / "rs.parquet", [["rot90"]])
    with pytest.raises(DomainConfigError, match="rollout.n >= 2"):
        validate_run_config(_config(files, n=1))
    pd.DataFrame([{"extra_info": {"index": 0}}]).to_parquet(tmp_path / "bare.parquet")
    with pytest.raises(ValueError, match="extra_info.transforms is missing"):
        validate_run_config(_config(str(tmp_path / "bare.parquet")))


def test_plain_grpo_with_domain_terms_off_needs_no_whitelist(tmp_path):
    off = {"shaping": {"enable": False}, "constraint": {"enable": False}}
    validate_run_config(_config(str(tmp_path / "does-not-exist.parquet"), adv="grpo", domain=off))


def test_sampled_estimators_and_mixture_mode_are_accepted(tmp_path):
    files = _parquet(tmp_path / "rs.parquet", [["rot90", "rot180", "rot270"]])
    validate_run_config(
        _config(files, domain={"constraint": {"estimator": "k3"}, "shaping": {"estimator": "k1", "divergence": "kl"}})
    )
    validate_run_config(_config(files, domain={"transforms": {"mode": "mixture"}}))


def test_engine_settings_that_bypass_the_logits_hook_are_refused(tmp_path):
    files = _parquet(tmp_path / "rs.parquet", [["rot90", "rot180", "rot270"]])
    config = _config(files)
    config.actor_rollout_ref.model = {"use_fused_kernels": True}
    with pytest.raises(DomainConfigError, match="use_fused_kernels"):
        validate_run_config(config)
    config = _config(files)
    config.actor_rollout_ref.actor = {"ulysses_sequence_parallel_size": 2}
    with pytest.raises(DomainConfigError, match="ulysses_sequence_parallel_size"):
        validate_run_config(config)


def test_bypassing_the_old_log_prob_pass_is_refused_when_shaping(tmp_path):
    files = _parquet(tmp_path / "rs.parquet", [["rot90", "rot180", "rot270"]])
    config = _config(files)
    config.algorithm.rollout_correction = {"bypass_mode": True}
    with pytest.raises(DomainConfigError, match="bypass_mode"):
        validate_run_config(config)


# --- The checks run whenever a transformed view is needed, whatever the estimator (hardening issue, point 3) ---
DC_ONLY = {"shaping": {"enable": False}, "constraint": {"enable": True}}


def test_grpo_with_dc_still_checks_the_rows_whitelists(tmp_path):
    files = _parquet(tmp_path / "organ.parquet", [["identity", "vflip"]])
    with pytest.raises(DomainConfigError, match=r"includes \['rot180', 'rot270', 'rot90'\]"):
        validate_run_config(_config(files, adv="grpo", domain=DC_ONLY))


def test_grpo_with_dc_still_refuses_engines_that_bypass_the_hook(tmp_path):
    files = _parquet(tmp_path / "rs.parquet", [["rot90", "rot180", "rot270"]])
    config = _config(files, adv="grpo", domain=DC_ONLY)
    config.actor_rollout_ref.actor = {"ulysses_sequence_parallel_size": 2}
    with pytest.raises(DomainConfigError, match="ulysses_sequence_parallel_size"):
        validate_run_config(config)
    config = _config(files, adv="grpo", domain=DC_ONLY)
    config.actor_rollout_ref.model = {"use_fused_kernels": True}
    with pytest.raises(DomainConfigError, match="use_fused_kernels"):
        validate_run_config(config)


def test_fixed_mode_respects_each_rows_whitelist(tmp_path):
    files = _parquet(tmp_path / "mixed.parquet", [["identity", "rot90", "vflip"], ["identity", "vflip"]])
    fixed_rot = {"transforms": {"names": ["rot90"], "mode": "fixed"}}
    with pytest.raises(DomainConfigError, match=r"training row 1 does not allow"):
        validate_run_config(_config(files, domain=fixed_rot))
    validate_run_config(_config(files, domain={"transforms": {"names": ["vflip"], "mode": "fixed"}}))


def test_rows_that_allow_no_transform_are_refused_with_the_reason(tmp_path):
    files = _parquet(tmp_path / "jigsaw.parquet", [[], ["identity"]])
    with pytest.raises(DomainConfigError, match="row 0 allows no transform.*jigsaw"):
        validate_run_config(_config(files))
    off = {"shaping": {"enable": False}, "constraint": {"enable": False}}
    validate_run_config(_config(files, adv="grpo", domain=off))  # plain GRPO on such rows is fine


def test_distillation_with_the_domain_terms_is_refused(tmp_path):
    files = _parquet(tmp_path / "rs.parquet", [["rot90", "rot180", "rot270"]])
    config = _config(files)
    config.distillation = {"enabled": True}
    with pytest.raises(DomainConfigError, match="distillation.enabled=true"):
        validate_run_config(config)


def test_k1_is_refused_for_dc_and_k2_k3_accepted(tmp_path):
    files = _parquet(tmp_path / "rs.parquet", [["rot90", "rot180", "rot270"]])
    with pytest.raises(DomainConfigError, match="estimator=k1 is unbounded below"):
        validate_run_config(_config(files, domain={"constraint": {"estimator": "k1"}}))
    for estimator in ("k2", "k3"):
        validate_run_config(_config(files, domain={"constraint": {"estimator": estimator}}))


def test_a_view_needs_the_recipes_agent_loop_and_worker(tmp_path):
    files = _parquet(tmp_path / "rs.parquet", [["rot90", "rot180", "rot270"]])
    config = _config(files, adv="grpo", domain=DC_ONLY)
    config.actor_rollout_ref.rollout.agent = {"default_agent_loop": "single_turn_agent"}
    with pytest.raises(DomainConfigError, match="default_agent_loop=domain_single_turn_agent"):
        validate_run_config(config)
    config = _config(files, adv="grpo", domain=DC_ONLY)
    config.domain_recipe = {"actor_rollout_ref_worker": None}
    with pytest.raises(DomainConfigError, match="domain_recipe.actor_rollout_ref_worker"):
        validate_run_config(config)
    config.domain_recipe = {"actor_rollout_ref_worker": "verl.workers.engine_workers.ActorRolloutRefWorker"}
    with pytest.raises(DomainConfigError, match="domain_recipe.actor_rollout_ref_worker"):
        validate_run_config(config)
    config.domain_recipe = {"actor_rollout_ref_worker": "recipe.domain_grpo.worker.DomainActorRolloutRefWorker"}
    validate_run_config(config)


@pytest.mark.parametrize("key", ["augment", "oc"])
def test_augment_and_oc_refuse_rows_without_a_split(tmp_path, key):
    path = tmp_path / "nosplit.parquet"
    rows = [
        {"extra_info": {"index": 0, "transforms": ["rot90"], "split": "train"}},
        {"extra_info": {"index": 1, "transforms": ["rot90"]}},
    ]
    pd.DataFrame(rows).to_parquet(path)
    off = {"shaping": {"enable": False}, "constraint": {"enable": False}, "transforms": {"names": ["rot90"]}}
    config = _config(str(path), adv="grpo", domain=off)
    config.domain_recipe = {key: {"enable": True}}
    with pytest.raises(DomainConfigError, match=rf"domain_recipe.{key}.enable=true: .*row 1 has no extra_info.split"):
        validate_run_config(config)


def _split_parquet(path, splits):
    rows = [
        {"extra_info": {"index": i, "split": s, "transforms": ["rot90", "rot180", "rot270"]}}
        for i, s in enumerate(splits)
    ]
    pd.DataFrame(rows).to_parquet(path)
    return str(path)


def test_a_training_file_where_no_row_gets_a_view_is_refused(tmp_path):
    # the val file given as data.train_files: every row's split is held-out, so no sample would get a view
    files = _split_parquet(tmp_path / "val.parquet", ["val", "val", "test"])
    with pytest.raises(DomainConfigError, match=r"no row of .*val\.parquet is training data.*\{'test': 1, 'val': 2\}"):
        validate_run_config(_config(files))
    # a user's own split name is not training data either (named in the error)
    files = _split_parquet(tmp_path / "fold.parquet", ["fold0"] * 2)
    with pytest.raises(DomainConfigError, match=r"'fold0': 2"):
        validate_run_config(_config(files))
    # the rule ignores case and surrounding spaces: "Train" rows get their view
    validate_run_config(_config(_split_parquet(tmp_path / "ok.parquet", ["Train", " train ", "TRAIN"])))
    # with the domain terms off (plain grpo) the rows are not read
    off = {"shaping": {"enable": False}, "constraint": {"enable": False}}
    validate_run_config(_config(files, adv="grpo", domain=off))


def test_some_held_out_rows_are_counted_not_refused(tmp_path):
    from recipe.domain_grpo.startup import check_rows_get_a_view, training_row_infos

    files = _split_parquet(tmp_path / "mixed.parquet", ["train", "val", "train"])
    assert check_rows_get_a_view(training_row_infos(files)) == {files: 1}


def test_the_split_rule_and_the_per_step_count():
    from recipe.domain_grpo.augment import is_training_sample, is_training_split, samples_without_view

    assert is_training_split(None) and is_training_split("Train") and is_training_split(" TRAIN ")
    assert not is_training_split("val") and not is_training_split("training") and not is_training_split("")
    assert is_training_sample({"extra_info": {"split": "Train"}})
    extras = [{"domain_view": [{"transform": "rot90", "seed": 1}]}, {}, None, {"domain_view": []}]
    # samples 1, 2, 3 have no view; sample 3 is verl's padding -> 2
    assert samples_without_view(extras, [False, False, False, True]) == 2
    assert samples_without_view(extras) == 3


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("actor.fsdp_config.ulysses_sequence_parallel_size", 2, "fsdp_config.ulysses_sequence_parallel_size=2"),
        ("actor.strategy", "megatron", "strategy=megatron"),
        ("actor.strategy", "fsdp", r"strategy=fsdp \(FSDP1"),
        ("actor.pad_to_length", True, "actor.pad_to_length=true"),
        ("actor.fsdp_config.pad_to_length", True, "fsdp_config.pad_to_length=true"),
    ],
)
def test_actor_settings_that_crash_after_ray_are_refused(tmp_path, key, value, match):
    files = _parquet(tmp_path / "rs.parquet", [["rot90", "rot180", "rot270"]])
    config = _config(files)
    OmegaConf.update(config, f"actor_rollout_ref.{key}", value, force_add=True)
    with pytest.raises(DomainConfigError, match=match):
        validate_run_config(config)
    # the same with the domain terms off but the recipe's worker doing the val-domain pass
    config = _config(files, adv="grpo", domain={"shaping": {"enable": False}, "constraint": {"enable": False}})
    OmegaConf.update(config, f"actor_rollout_ref.{key}", value, force_add=True)
    config.domain_recipe = {"actor_rollout_ref_worker": "recipe.domain_grpo.worker.DomainActorRolloutRefWorker"}
    with pytest.raises(DomainConfigError, match=match):
        validate_run_config(config)
    config.domain.validation = {"enable": False}  # verl's own loss everywhere: accepted
    validate_run_config(config)


def test_domain_grpo_needs_the_recipes_trainer_mode(tmp_path):
    files = _parquet(tmp_path / "rs.parquet", [["rot90", "rot180", "rot270"]])
    config = _config(files)
    config.trainer = {"v1": {"trainer_mode": "sync"}}
    with pytest.raises(DomainConfigError, match=r"trainer_mode=sync is PPOTrainerSync; set trainer.v1.trainer_mode="):
        validate_run_config(config)
    config.trainer.v1.trainer_mode = "domain_grpo"
    validate_run_config(config)
    import recipe.novel_task.trainer  # noqa: F401  (registers rollout_dump, a DomainGRPOTrainer subclass)

    config.trainer.v1.trainer_mode = "rollout_dump"
    validate_run_config(config)


def test_the_views_token_budget_is_derived_and_printed(tmp_path, capsys):
    from recipe.domain_grpo.startup import view_token_budget

    files = _parquet(tmp_path / "rs.parquet", [["rot90", "rot180", "rot270"]])
    config = _config(files)
    OmegaConf.update(config, "actor_rollout_ref.actor.use_dynamic_bsz", True, force_add=True)
    OmegaConf.update(config, "actor_rollout_ref.actor.ppo_max_token_len_per_gpu", 6144, force_add=True)
    domain = validate_run_config(config)
    # one view per sample: the update holds 6144 original + 6144 transformed tokens; the log-prob budget follows
    assert view_token_budget(config, domain) == {
        "views": 1,
        "update_budget": 6144,
        "update_tokens": 12288,
        "log_prob_budget": 6144,
        "log_prob_tokens": 12288,
    }
    assert "update up to 12288 tokens per GPU (ppo_max_token_len_per_gpu=6144)" in capsys.readouterr().out
    # mixture over 3 rotations, DC only: the update holds 4 views, the log-prob pass (no DR) 1
    config.domain = {"transforms": {"mode": "mixture"}, "shaping": {"enable": False}}
    config.algorithm.adv_estimator = "grpo"
    OmegaConf.update(config, "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu", 8000, force_add=True)
    budget = view_token_budget(config, validate_run_config(config))
    assert (budget["update_tokens"], budget["log_prob_tokens"]) == (6144 * 4, 8000)
    config.actor_rollout_ref.actor.use_dynamic_bsz = False
    assert view_token_budget(config, validate_run_config(config)) is None
