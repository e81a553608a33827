"""The study's GPU launch scripts compose into valid configs (stub interpreter, no launch), jigsaw rows refuse
Domain-Aware GRPO at start-up, and the study specs resolve (dry run)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/recipe: launch_helpers
from launch_helpers import ENTRY, REPO, compose_run, script_calls  # noqa: E402
from test_launch_configs_on_cpu import (  # noqa: E402
    VERL_CONFIG_DIR,
    _unquoted_expansions,
    _validate,
    sft_trainer_overrides,
)

from data_prep.jigsaw import jigsaw_row  # noqa: E402
from recipe.domain_grpo.startup import validate_run_config  # noqa: E402
from recipe.novel_task.study import load_spec, run_study  # noqa: E402
from verl_ext.config import DomainConfigError  # noqa: E402


def _jigsaw_parquet(path: Path, n: int = 3) -> str:
    rows = [
        jigsaw_row(
            shuffled_png=b"x",
            answer=[2, 1, 4, 3],
            grid=2,
            question="q",
            prompt_style="plain",
            split="train",
            index=i,
            dataset="d",
            source_path="p",
        )
        for i in range(n)
    ]
    pd.DataFrame(rows).to_parquet(path)
    return str(path)


def test_grpo_script_composes_and_validates(tmp_path):
    train = _jigsaw_parquet(tmp_path / "train.parquet")
    env = {"TRAIN_FILES": train, "VAL_FILES": train, "TOTAL_STEPS": "7", "ROLLOUT_DIR": str(tmp_path / "dump")}
    argv = script_calls("run_qwen25vl_jigsaw.sh", tmp_path, env, "trainer.test_freq=3")[-1]
    assert argv[:2] == ENTRY and "method=grpo" in argv
    config = compose_run(argv[2:])
    _validate(config)
    assert config.trainer.v1.trainer_mode == "rollout_dump" and config.trainer.rollout_data_dir == str(
        tmp_path / "dump"
    )
    assert config.algorithm.adv_estimator == "grpo" and config.trainer.total_training_steps == 7
    assert config.trainer.test_freq == 3  # extra arguments are Hydra overrides, applied last
    assert config.ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES == "recipe.novel_task.plugins"
    reward = Path(config.reward.custom_reward_function.path)
    assert (
        reward.name == "jigsaw.py" and reward.is_file() and config.reward.custom_reward_function.name == "compute_score"
    )
    rollout = config.actor_rollout_ref.rollout
    assert (rollout.n, rollout.temperature, rollout.name, config.actor_rollout_ref.actor.optim.lr) == (
        8,
        1.0,
        "vllm",
        1e-6,
    )
    from verl.trainer.ppo.v1 import get_trainer_cls

    import recipe.novel_task.plugins  # noqa: F401  (what VERL_USE_EXTERNAL_MODULES imports in every process)
    from recipe.novel_task.trainer import RolloutDumpTrainer

    assert get_trainer_cls(config.trainer.v1.trainer_mode) is RolloutDumpTrainer


@pytest.mark.parametrize("method", ["dc_dr", "dr", "grpo_da", "oc"])
def test_domain_aware_grpo_on_jigsaw_rows_refuses_at_startup(tmp_path, method):
    train = _jigsaw_parquet(tmp_path / "train.parquet")
    argv = script_calls("run_qwen25vl_rs.sh", tmp_path, {"TRAIN_FILES": train}, f"method={method}")[-1]
    config = compose_run(argv[2:])
    with pytest.raises(ValueError, match="allows no transform|allows \\[\\], none of"):
        validate_run_config(config)
    if method in ("dc_dr", "dr"):
        with pytest.raises(DomainConfigError, match="allows no transform .*jigsaw"):
            validate_run_config(config)


@pytest.mark.parametrize("method", ["sft", "sft_rollouts"])
def test_sft_script_converts_then_launches_verls_sft_trainer(tmp_path, method):
    train = _jigsaw_parquet(tmp_path / "train.parquet")
    env = {"TRAIN_FILES": train, "METHOD": method, "ROLLOUT_DIR": str(tmp_path / "dump"), "TOTAL_STEPS": "7"}
    convert, launch = script_calls("run_sft_jigsaw.sh", tmp_path, env, "trainer.seed=3")
    if method == "sft":
        assert convert[:2] == ["-m", "data_prep.sft"] and convert[-2:] == ["--think", ""]
    else:
        assert convert[:3] == ["-m", "recipe.novel_task.rollouts", "to-sft"] and "--min-score" in convert
        assert convert[convert.index("--dump") + 1] == str(tmp_path / "dump")
    sft_file = convert[convert.index("--out") + 1]
    _, overrides = sft_trainer_overrides(launch)  # the recipes' launcher: torchrun + verl.trainer.sft_trainer
    config = compose_run(overrides, VERL_CONFIG_DIR, "sft_trainer_engine")
    assert config.data.train_files == sft_file and config.trainer.total_training_steps == 7
    assert config.optim.lr == 1e-5 and config.trainer.seed == 3 and "hf_model" in list(config.checkpoint.save_contents)


def test_sft_script_errors(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "PYTHON": "/bin/false"}
    bad = subprocess.run(
        ["bash", str(REPO / "examples/run_sft_jigsaw.sh"), "method=grpo"], env=env, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "not an SFT arm" in bad.stderr
    env["METHOD"] = "sft_rollouts"
    bad = subprocess.run(["bash", str(REPO / "examples/run_sft_jigsaw.sh")], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "needs ROLLOUT_DIR" in bad.stderr


def test_scripts_quote_every_variable():
    for script in ("run_qwen25vl_jigsaw.sh", "run_sft_jigsaw.sh"):
        lines = (REPO / "examples" / script).read_text().splitlines()
        assert not [f"{script}:{n}: {line}" for n, line in enumerate(lines, 1) if _unquoted_expansions(line)]


@pytest.mark.parametrize("spec", ["study.yaml", "study_cpu.yaml"])
def test_study_specs_resolve(spec, tmp_path):
    lines: list[str] = []
    code = run_study(
        load_spec(REPO / "recipe/novel_task/config" / spec), str(tmp_path), dry_run=True, echo=lines.append
    )
    assert code == 0 and not (tmp_path / ".study").exists()
    text = "\n".join(lines)
    for step in ("base_eval", "grpo", "sft", "sft_rollouts", "eval_sft_rollouts", "likelihood"):
        assert f"[{step}]" in text
    assert "rollout_dump" in text or "run_qwen25vl_jigsaw.sh" in text
