"""DomainConfig: defaults, parsing, and start-up errors that say what to change."""

import dataclasses

import pytest

from verl_ext.config import DomainConfig, DomainConfigError, validate_for_training


def test_defaults_are_the_papers_method():
    cfg = DomainConfig.from_dict({})
    assert cfg.constraint.divergence == "kl" and cfg.constraint.weight == 1.0 and cfg.constraint.active
    assert cfg.shaping.divergence == "js" and cfg.shaping.enable
    assert cfg.transforms.names == ("rot90", "rot180", "rot270") and cfg.transforms.mode == "sample"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.constraint.weight = 2.0


def test_parses_nested_mapping():
    cfg = DomainConfig.from_dict(
        {"constraint": {"weight": 0.5, "detach_transformed": True}, "transforms": {"names": ["vflip"], "mode": "fixed"}}
    )
    assert cfg.constraint.weight == 0.5 and cfg.constraint.detach_transformed
    assert cfg.transforms.names == ("vflip",)


@pytest.mark.parametrize(
    "given, match",
    [
        ({"constrain": {}}, r"unknown key\(s\) \['constrain'\]"),
        ({"constraint": {"lambda": 1}}, r"domain.constraint: unknown key\(s\) \['lambda'\]"),
        ({"constraint": {"divergence": "tv"}}, r"domain.constraint.divergence='tv' is not valid"),
        ({"constraint": {"weight": -1}}, r"must be >= 0"),
        ({"constraint": {"estimator": "k3", "divergence": "js"}}, "set domain.constraint.divergence=kl"),
        ({"shaping": {"divergence": "l2"}}, r"domain.shaping.divergence='l2'"),
        ({"transforms": {"names": ["rot45"]}}, r"unknown transform\(s\) \['rot45'\]"),
        ({"transforms": {"mode": "fixed", "names": ["rot90", "rot180"]}}, "needs exactly one name"),
        ({"constraint": {"chunk_tokens": 0}}, ">= 1 or null"),
        ({"shaping": {"base_estimator": "gae"}}, r"domain.shaping.base_estimator='gae' cannot be shaped"),
        ({"shaping": {"base_estimator": "domain_grpo"}}, r"domain.shaping.base_estimator='domain_grpo' cannot"),
    ],
)
def test_invalid_settings_name_the_key(given, match):
    with pytest.raises(DomainConfigError, match=match):
        DomainConfig.from_dict(given)


def test_training_checks():
    cfg = DomainConfig.from_dict({})
    with pytest.raises(DomainConfigError, match="rollout.n >= 2"):
        validate_for_training(cfg, "domain_grpo", rollout_n=1)
    identity_only = DomainConfig.from_dict({"transforms": {"names": ["identity"]}})
    with pytest.raises(DomainConfigError, match="non-identity transform"):
        validate_for_training(identity_only, "domain_grpo", rollout_n=4)
    with pytest.raises(DomainConfigError, match="needs algorithm.adv_estimator=domain_grpo"):
        validate_for_training(cfg, "grpo", rollout_n=4)
    # Plain GRPO with the domain terms switched off is fine.
    off = DomainConfig.from_dict({"shaping": {"enable": False}, "constraint": {"enable": False}})
    validate_for_training(off, "grpo", rollout_n=4)


def test_transform_outside_a_rows_whitelist_is_refused():
    cfg = DomainConfig.from_dict({"transforms": {"names": ["rot90", "hflip"]}})
    rows = [["identity", "rot90", "rot180", "rot270", "hflip", "vflip"], ["identity", "vflip", "rot90"]]
    with pytest.raises(DomainConfigError, match=r"includes \['hflip'\], which training row 1 does not allow"):
        validate_for_training(cfg, "domain_grpo", rollout_n=4, row_whitelists=rows)
    validate_for_training(DomainConfig.from_dict({"transforms": {"names": ["rot90"]}}), "domain_grpo", 4, rows)
    with pytest.raises(ValueError, match="unknown transform"):
        validate_for_training(cfg, "domain_grpo", rollout_n=4, row_whitelists=[["rot91"]])


def test_base_estimator_defaults_to_grpo_and_is_read_by_domain_grpo_only():
    assert DomainConfig.from_dict({}).shaping.base_estimator == "grpo"
    rloo = DomainConfig.from_dict({"shaping": {"enable": False, "base_estimator": "rloo"}, "constraint": {}})
    validate_for_training(rloo, "domain_grpo", rollout_n=4)
    with pytest.raises(DomainConfigError, match="set algorithm.adv_estimator=rloo and drop the key"):
        validate_for_training(rloo, "grpo", rollout_n=4)
