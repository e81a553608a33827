"""The domain terms' keys: constraint.{target, scope}, shaping.{level, scope}, and detach_transformed as an alias."""

import pytest

from verl_ext.config import DomainConfig, DomainConfigError


def test_defaults_are_todays_behaviour():
    cfg = DomainConfig.from_dict({})
    assert (cfg.constraint.target, cfg.constraint.scope) == ("both", "response")
    assert (cfg.shaping.level, cfg.shaping.scope) == ("token", "response")


@pytest.mark.parametrize("target", ["both", "original", "transformed"])
def test_each_target_is_accepted(target):
    assert DomainConfig.from_dict({"constraint": {"target": target}}).constraint.target == target


def test_detach_transformed_is_the_deprecated_alias_of_target_transformed():
    cfg = DomainConfig.from_dict({"constraint": {"detach_transformed": True}})
    assert cfg.constraint.target == "transformed"
    same = DomainConfig.from_dict({"constraint": {"detach_transformed": True, "target": "transformed"}})
    assert same.constraint.target == "transformed"
    with pytest.raises(DomainConfigError, match=r"detach_transformed=true .* contradicts domain.constraint.target"):
        DomainConfig.from_dict({"constraint": {"detach_transformed": True, "target": "original"}})


@pytest.mark.parametrize(
    ("section", "match"),
    [
        ({"constraint": {"target": "teacher"}}, r"domain.constraint.target='teacher' is not valid"),
        ({"constraint": {"scope": "think"}}, r"domain.constraint.scope='think' is not valid"),
        ({"shaping": {"scope": "answers"}}, r"domain.shaping.scope='answers' is not valid"),
        ({"shaping": {"level": "sample"}}, r"domain.shaping.level='sample' is not valid"),
        ({"shaping": {"level": "sequence", "divergence": "kl"}}, r"level=sequence .*shaping.divergence=js"),
        (
            {"shaping": {"level": "sequence", "divergence": "kl", "estimator": "k3"}},
            r"level=sequence .*shaping.estimator=full",
        ),
    ],
)
def test_bad_values_name_the_key(section, match):
    with pytest.raises(DomainConfigError, match=match):
        DomainConfig.from_dict(section)


def test_answer_scope_and_sequence_level_parse():
    cfg = DomainConfig.from_dict(
        {"constraint": {"scope": "answer"}, "shaping": {"scope": "answer", "level": "sequence"}}
    )
    assert cfg.constraint.scope == cfg.shaping.scope == "answer" and cfg.shaping.level == "sequence"
