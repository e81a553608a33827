"""Config values mean what they say: every bool/number field of every config dataclass refuses a wrong-typed value.

The classes are found by reading the project's source (every `@dataclass` named `...Config`), so a new config
dataclass without the check fails here.
"""

import ast
import dataclasses
import importlib
import math
from pathlib import Path

import pytest

from verl_ext.config import DomainConfig, DomainConfigError
from verl_ext.config_values import ConfigValueError, checked_fields, parse_bool, parse_float, parse_int
from verl_ext.dpo import DPOConfig, DPOConfigError

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("verl_ext", "recipe", "data_prep")
BAD = {
    bool: ["no", "off", "false", "False", "true", "yes", "", 1, 0, 1.0],
    int: ["2", 2.0, True, "x"],
    float: ["x", "1e-3", "0.5", True, math.nan, math.inf],
}


def _config_dataclasses() -> list[str]:
    """`module:Class` of every dataclass whose name ends in Config in the project's packages (source, not imports)."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text())
            for node in tree.body:
                if not isinstance(node, ast.ClassDef) or not node.name.endswith("Config"):
                    continue
                decorators = [ast.unparse(d) for d in node.decorator_list]
                if any(d.startswith("dataclass") for d in decorators):
                    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
                    found.append(f"{module}:{node.name}")
    return found


def test_the_project_has_the_expected_config_dataclasses():
    found = set(_config_dataclasses())
    assert {"verl_ext.config:DomainConstraintConfig", "verl_ext.dpo:DPOConfig"} <= found
    assert "recipe.domain_grpo.augment:OutputConstraintConfig" in found
    assert "recipe.pivot.freeze:PivotFSDPEngineConfig" in found


def _own_fields(cls: type) -> list[tuple[str, type, bool]]:
    """Checked fields declared by the project (a subclass of verl's config: only its own)."""
    own = set(cls.__dict__.get("__annotations__", {}))
    return [f for f in checked_fields(cls) if f[0] in own]


@pytest.mark.parametrize("target", _config_dataclasses())
def test_every_bool_and_number_field_refuses_a_wrong_typed_value(target):
    module, name = target.split(":")
    cls = getattr(importlib.import_module(module), name)
    cls()  # the defaults are valid
    fields = _own_fields(cls)
    for field, kind, optional in fields:
        bad = BAD[kind] + ([] if optional else [None])
        for value in bad:
            with pytest.raises(ValueError, match=rf"\.{field}=") as info:
                cls(**{field: value})
            assert "\n" not in str(info.value), str(info.value)  # one line
        good = {bool: [True, False], int: [3], float: [1, 0.25]}[kind]  # an int is a float; in every range
        for value in good:
            cls(**{field: value})
    names = {f.name for f in dataclasses.fields(cls)}
    assert all(f[0] in names for f in fields)


def test_the_issues_example_no_longer_turns_the_constraint_on():
    # domain.constraint.enable=no from the command line stays the string "no" (Hydra), which is truthy
    for value in ("no", "off", "false", "0"):
        with pytest.raises(DomainConfigError, match=rf"domain\.constraint\.enable={value!r} must be true or false"):
            DomainConfig.from_dict({"constraint": {"enable": value}})
    with pytest.raises(DomainConfigError, match="domain.constraint.detach_transformed='no'"):
        DomainConfig.from_dict({"constraint": {"detach_transformed": "no"}})
    with pytest.raises(DomainConfigError, match="domain.shaping.enable='off'"):
        DomainConfig.from_dict({"shaping": {"enable": "off"}})
    with pytest.raises(DomainConfigError, match=r"domain\.constraint\.weight='heavy' must be a finite number"):
        DomainConfig.from_dict({"constraint": {"weight": "heavy"}})
    assert DomainConfig.from_dict({"constraint": {"enable": False}}).constraint.active is False
    assert DomainConfig.from_dict({"constraint": {"weight": 2}}).constraint.weight == 2


def test_dpo_and_recipe_sections_name_their_keys():
    with pytest.raises(DPOConfigError, match="dpo.skip_empty_update='no'"):
        DPOConfig.from_dict({"skip_empty_update": "no"})
    with pytest.raises(DPOConfigError, match="dpo.pairs.threshold='1'"):
        DPOConfig.from_dict({"pairs": {"threshold": "1"}})
    from omegaconf import OmegaConf

    from recipe.domain_grpo.augment import AgentExtrasConfigError, extras_from_config

    with pytest.raises(AgentExtrasConfigError, match="domain_recipe.oc.greedy='off'"):
        extras_from_config(OmegaConf.create({"domain_recipe": {"oc": {"greedy": "off"}}}))


def test_parsers_accept_what_hydra_parses_and_nothing_else():
    assert parse_bool("k", True) is True and parse_bool("k", False) is False
    assert parse_int("k", 7) == 7 and parse_float("k", 7) == 7 and parse_float("k", 1e-3) == 1e-3
    for parser, value in ((parse_bool, "no"), (parse_int, "7"), (parse_float, "7")):
        with pytest.raises(ConfigValueError, match=r"^a\.b="):
            parser("a.b", value)
