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


def test_the_rl_command_composes_with_the_seeds_and_extra_overrides(tmp_path):
    # The whole command Pipeline.rl builds (here grpo_da, seed 2, with Settings.rl_overrides) composes, and the run's
    # seed reaches the rollout, the transforms and grpo_da's draw of T (before, every seed drew the same T per row).
    from recipe.domain_grpo.demo_pipeline import Pipeline, Settings, StepError

    extra = ("domain.transforms.names=[rot90,hflip]",)
    pipe = Pipeline(tmp_path, Settings(rl_overrides=extra, rl_tag="t"), echo=lambda text: None)
    steps = []
    pipe.step = lambda name, argv, *a, **k: steps.append([str(x) for x in argv])  # record, run nothing
    pipe.train_rows = lambda: 145
    with pytest.raises(StepError, match="saved no HF weights"):
        pipe.rl("grpo_da", 2, start=tmp_path / "warm")
    overrides = steps[0][2:]  # after `bash examples/run_tiny_cpu.sh`
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose(config_name="domain_grpo_trainer", overrides=["stand_in=cpu_tiny", *overrides])
    assert cfg.domain_recipe.augment.seed == cfg.domain.transforms.seed == cfg.actor_rollout_ref.rollout.seed == 2
    assert list(cfg.domain.transforms.names) == ["rot90", "hflip"]
