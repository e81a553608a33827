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
