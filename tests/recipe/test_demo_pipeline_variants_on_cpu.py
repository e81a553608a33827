"""recipe/domain_grpo/demo_pipeline.py VARIANTS: every variant's preset and extra overrides compose into the recipe's
Hydra config with the terms and scopes its name says (a mistyped key would fail here, not an hour into the bench)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from recipe.domain_grpo.demo_pipeline import REPO, VARIANTS, variant_overrides

CONFIG_DIR = str(REPO / "recipe" / "domain_grpo" / "config")
# variant: (DC on, DC scope, DR on, DR scope)
EXPECTED = {
    "grpo": (False, "response", False, "response"),
    "dc": (True, "response", False, "response"),
    "dr": (False, "response", True, "response"),
    "dc_dr": (True, "response", True, "response"),
    "dc_ans": (True, "answer", False, "response"),
    "dr_ans": (False, "response", True, "answer"),
    "dc_dr_ans": (True, "answer", True, "answer"),
    "grpo_da": (False, "response", False, "response"),  # no domain term: the augmentation is in the agent loop
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_composes_with_its_scopes(variant):
    spec = VARIANTS[variant]
    overrides = ["stand_in=cpu_tiny", f"method={spec['method']}", *variant_overrides(variant)]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose(config_name="domain_grpo_trainer", overrides=overrides)
    d = cfg.domain
    got = (d.constraint.enable, d.constraint.scope, d.shaping.enable, d.shaping.scope)
    assert got == EXPECTED[variant]
    assert spec["dc"] == EXPECTED[variant][0]
    assert cfg.domain_recipe.deterministic  # the CPU stand-in makes every bench run reproducible
    assert cfg.domain_recipe.get("augment", {}).get("enable", False) == (variant == "grpo_da")


def test_every_variant_is_checked():
    assert set(EXPECTED) == set(VARIANTS)
