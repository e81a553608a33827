"""The GPU launch scripts (Qwen2.5-VL-3B) compose into valid configs; the GPU study spec plans every stage."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from pivot_helpers import REPO, dpo_config, script_argv, tiny_model, write_pairs

from recipe.pivot.sft import stage_overrides, train_command
from recipe.pivot.startup import validate_dpo_run


def _dpo_launch(tmp_path: Path, env: dict[str, str], *args: str, rows: int = 256):
    train = write_pairs(tmp_path / "pairs.parquet", [("a", "b")] * rows)  # the script's batch: 256 rows
    env = {"TRAIN_FILES": train, "MODEL_PATH": str(tiny_model()), **env}
    argv = script_argv("run_pivot_dpo.sh", tmp_path, env, *args)
    assert argv[:2] == ["-m", "recipe.pivot.main_pivot_dpo"]
    config = dpo_config(argv[2:])
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    validate_dpo_run(config)
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    return config


def test_dpo_script_has_the_papers_settings_and_validates(tmp_path):
    config = _dpo_launch(tmp_path, {})
    actor, rollout = config.actor_rollout_ref.actor, config.actor_rollout_ref.rollout
    assert (config.dpo.beta, actor.optim.lr, config.trainer.total_epochs, config.data.train_batch_size) == (
        0.1,
        1e-6,
        3,
        256,
    )
    assert actor.optim.lr_scheduler_type == "cosine" and actor.ppo_mini_batch_size == 256
    assert (rollout.name, rollout.n, actor.strategy, config.trainer.n_gpus_per_node) == ("vllm", 2, "fsdp2", 8)
    assert actor.freeze_vision_tower is False and config.dpo.pairs.source == "offline"


def test_dpo_script_refuses_a_file_smaller_than_its_batch(tmp_path):
    # the documented GPU default (batch 256) on the 145-row demo-rs pairs: no step, ZeroDivisionError after Ray starts
    from verl_ext.dpo import DPOConfigError

    with pytest.raises(DPOConfigError, match=r"145 training rows .* < data.train_batch_size=256"):
        _dpo_launch(tmp_path, {}, rows=145)


def test_dpo_script_online_and_frozen_encoder_variants(tmp_path):
    config = _dpo_launch(tmp_path, {"SOURCE": "online", "ROLLOUT_N": "8", "FREEZE_VISION": "true"}, "dpo.beta=0.2")
    assert config.actor_rollout_ref.rollout.n == 8 and config.dpo.beta == 0.2
    assert config.actor_rollout_ref.actor.fsdp_config.freeze_vision_tower is True


STAGE_FLAGS = [("all", None, None), ("projector", True, True), ("projector_llm", True, False)]


@pytest.mark.parametrize(("stage", "vision", "language"), STAGE_FLAGS)
def test_sft_script_stages_compose_into_verls_sft_config_with_the_freeze(tmp_path, stage, vision, language):
    from verl.utils.config import omega_conf_to_dataclass

    sft = tmp_path / "sft.parquet"
    sft.write_bytes(b"")  # exists: the script does not convert
    argv = script_argv("run_pivot_sft.sh", tmp_path, {"STAGE": stage, "TRAIN_FILES": str(sft)})
    assert argv[:4] == ["-m", "recipe.pivot.sft", "train", "--stage"] and argv[4] == stage
    rest, flags = argv[5:], {}
    while rest and rest[0].startswith("--"):
        flags[rest[0]], rest = rest[1], rest[2:]
    assert flags["--nproc"] == "8" and flags["--nnodes"] == "1"
    cmd, _ = train_command(stage, flags["--train"], flags["--model"], flags["--out"], rest, nproc=8)
    assert cmd[cmd.index("-m", 2) + 1] == "verl.trainer.sft_trainer"
    overrides = cmd[cmd.index("verl.trainer.sft_trainer") + 1 :]
    with initialize_config_dir(config_dir=str(_verl_config_dir()), version_base=None):
        config = compose(config_name="sft_trainer_engine", overrides=overrides)
    engine = omega_conf_to_dataclass(config.engine)
    if vision is None:
        assert type(engine).__name__ == "FSDPEngineConfig" and not stage_overrides(stage)
    else:
        assert (engine.freeze_vision_tower, engine.freeze_language_model) == (vision, language)
    assert config.optim.lr == {"all": 1e-5, "projector": 1e-4, "projector_llm": 1e-5}[stage]
    assert config.engine.strategy == "fsdp2" and config.trainer.n_gpus_per_node == 8


def test_sft_script_refuses_an_unknown_stage(tmp_path):
    with pytest.raises(subprocess.CalledProcessError):
        script_argv("run_pivot_sft.sh", tmp_path, {"STAGE": "encoder"})


def _verl_config_dir() -> Path:
    import verl.trainer.config as cfg

    return Path(cfg.__file__).parent


def test_gpu_study_spec_plans_every_stage(tmp_path):
    argv = [sys.executable, "-m", "recipe.pivot.study", "--spec", str(REPO / "recipe/pivot/study/qwen25vl_3b.yaml")]
    argv += ["--set", "base=/models/qwen", "--set", "train=t.parquet", "--set", "test=v.parquet"]
    argv += ["--set", f"out={tmp_path}", "--dry-run"]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, check=True)
    stages = [line.split("]")[0][1:] for line in proc.stdout.splitlines() if line.startswith("[")]
    expected = ["pairs", "sft_rows", "dpo", "sft"]
    for enc in ("base", "sft", "dpo"):
        expected += [f"transplant_{enc}", f"stage1_{enc}", f"stage2_{enc}"]
    expected += ["probes"]
    for k in (1, 2):  # vars.train_seeds [0, 1, 2]: the first seed is sft/dpo/probes themselves
        expected += [f"dpo_seed{k}", f"sft_seed{k}", f"probes_seed{k}"]
    expected += [f"eval_{m}" for m in ("base", "sft", "dpo", "pivot_base", "pivot_sft", "pivot_dpo")]
    assert stages == expected
    assert "env STAGE=projector" in proc.stdout and "bash examples/run_pivot_dpo.sh" in proc.stdout
    bad = subprocess.run(argv[:5] + ["--dry-run"], capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and "must be set" in bad.stderr and bad.stderr.count("\n") == 1
