"""The GPU launch scripts' own Hydra overrides compose into a valid run config (no launch, no GPU).

Each script runs for real with PYTHON = a stub that records its argv, so a wrong key or a wrong value in the script
fails here instead of on a cluster.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from launch_helpers import ENTRY, REPO, RS_WHITELIST, compose_run, script_argv, script_calls, write_rows

from recipe.domain_grpo.augment import validate_agent_extras
from recipe.domain_grpo.startup import training_row_whitelists, validate_run_config
from verl_ext.config import DomainConfigError

METHODS = ["dc_dr", "grpo", "dc", "dr", "kl_kl", "js_js", "js_kl", "grpo_da", "oc"]


def _validate(config) -> None:
    """Everything the entry point checks before Ray starts that runs without a GPU."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    validate_run_config(config)
    validate_agent_extras(config, training_row_whitelists(config.data.train_files))


def _launch_config(script: str, tmp_path: Path, env: dict[str, str], *args: str):
    argv = script_argv(script, tmp_path, env, *args)
    assert argv[:2] == ENTRY
    return argv[2:], compose_run(argv[2:])


@pytest.mark.parametrize("method", METHODS)
def test_rs_script_composes_and_validates_for_every_method(tmp_path, method):
    train = write_rows(tmp_path / "train.parquet", RS_WHITELIST)
    overrides, config = _launch_config("run_qwen25vl_rs.sh", tmp_path, {"TRAIN_FILES": train}, f"method={method}")
    assert overrides.count(f"method={method}") == 1
    _validate(config)
    rollout, actor = config.actor_rollout_ref.rollout, config.actor_rollout_ref.actor
    assert (rollout.n, rollout.temperature, rollout.name, actor.optim.lr) == (8, 1.0, "vllm", 1e-6)
    assert (actor.use_kl_loss, actor.kl_loss_coef, actor.kl_loss_type) == (True, 0.04, "low_var_kl")
    assert (config.data.max_response_length, actor.strategy, actor.use_dynamic_bsz) == (256, "fsdp2", True)
    assert config.actor_rollout_ref.model.use_remove_padding and config.trainer.n_gpus_per_node == 8
    assert list(config.domain.transforms.names) == ["rot90", "rot180", "rot270"]
    reward_file = Path(config.reward.custom_reward_function.path)
    assert reward_file.is_file() and reward_file.name == ("oc_reward.py" if method == "oc" else "rewards.py")


def test_rs_script_env_and_extra_overrides_win(tmp_path):
    train = write_rows(tmp_path / "train.parquet", RS_WHITELIST)
    env = {"TRAIN_FILES": train, "METHOD": "dr", "N_GPUS": "4", "ROLLOUT_N": "5", "LR": "2e-6", "MODEL_PATH": "/m x"}
    _, config = _launch_config("run_qwen25vl_rs.sh", tmp_path, env, "trainer.total_epochs=3")
    assert (config.trainer.n_gpus_per_node, config.actor_rollout_ref.rollout.n) == (4, 5)
    assert config.actor_rollout_ref.actor.optim.lr == 2e-6 and config.trainer.total_epochs == 3
    assert config.actor_rollout_ref.model.path == "/m x"  # quoted: a path with a space stays one value
    assert not config.domain.constraint.enable and config.trainer.experiment_name == "qwen25vl3b_rs_dr"


@pytest.mark.parametrize(
    ("dataset", "whitelist", "names"),
    [
        ("organamnist", ["identity", "vflip"], ["vflip"]),
        ("chestmnist", ["identity", "hflip"], ["hflip"]),
        ("bloodmnist", RS_WHITELIST, ["hflip", "vflip", "rot180"]),
    ],
)
def test_med_script_picks_transforms_the_rows_allow(tmp_path, dataset, whitelist, names):
    train = write_rows(tmp_path / "train.parquet", whitelist)
    _, config = _launch_config("run_qwen25vl_med.sh", tmp_path, {"TRAIN_FILES": train, "DATASET": dataset})
    assert list(config.domain.transforms.names) == names
    assert config.trainer.experiment_name == f"qwen25vl3b_{dataset}_dc_dr"
    _validate(config)


def test_med_script_wrong_transforms_fail_at_startup(tmp_path):
    train = write_rows(tmp_path / "train.parquet", ["identity", "vflip"])
    env = {"TRAIN_FILES": train, "DATASET": "organamnist", "TRANSFORMS": "[hflip]"}
    _, config = _launch_config("run_qwen25vl_med.sh", tmp_path, env)
    with pytest.raises(DomainConfigError, match="does not allow"):
        validate_run_config(config)


def test_med_script_unknown_flag_without_transforms_fails(tmp_path):
    import subprocess

    result = subprocess.run(
        ["bash", str(REPO / "examples" / "run_qwen25vl_med.sh")],
        env={"PATH": "/usr/bin:/bin", "DATASET": "nosuchmnist", "PYTHON": "/bin/false"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "not a MedMNIST flag" in result.stderr


def _unquoted_expansions(line: str) -> list[int]:
    """Columns of a `$` expansion outside quotes (comments skipped; `$(...)` opens a fresh quoting context)."""
    found, stack, single, col = [], [False], False, 0
    while col < len(line):
        char, double = line[col], stack[-1]
        if char == "#" and not (double or single) and (col == 0 or line[col - 1] in " \t"):
            break
        if char == "'" and not double:
            single = not single
        elif single:
            pass
        elif line.startswith("$(", col):
            if not double:
                found.append(col)
            stack.append(False)
            col += 1
        elif char == ")" and len(stack) > 1 and not double:
            stack.pop()
        elif char == '"':
            stack[-1] = not double
        elif char == "$" and not double:
            found.append(col)
        col += 1
    return found


def test_launch_scripts_quote_every_variable():
    for script in ("run_qwen25vl_rs.sh", "run_qwen25vl_med.sh", "run_sft_qwen25vl.sh"):
        lines = (REPO / "examples" / script).read_text().splitlines()
        bad = [f"{script}:{n}: {line}" for n, line in enumerate(lines, 1) if _unquoted_expansions(line)]
        assert not bad, bad
    assert _unquoted_expansions("echo $X") == [5] and not _unquoted_expansions('echo "${X}" # $Y')
    assert not _unquoted_expansions('A="$(cd "$(dirname "${B}")" && pwd)"') and _unquoted_expansions('A="$(f $B)"')


VERL_CONFIG_DIR = Path(__import__("verl").__file__).parent / "trainer" / "config"


def sft_trainer_overrides(launch: list[str]) -> tuple[list[str], list[str]]:
    """The GPU command the recipes' SFT launcher builds for a script's call, split into (torchrun's part, verl's
    overrides)."""
    from recipe.common.sft import command_from_cli

    assert launch[:2] == ["-m", "recipe.common.sft"]
    cmd, _, _ = command_from_cli(launch[2:])
    split = cmd.index("verl.trainer.sft_trainer")
    return cmd[: split + 1], cmd[split + 1 :]


@pytest.mark.parametrize(("method", "augment"), [("sft", False), ("sft_da", True)])
def test_sft_script_converts_then_launches_verls_sft_trainer_with_torchrun(tmp_path, method, augment):
    from launch_helpers import script_calls

    rl = write_rows(tmp_path / "train_8shot.parquet", RS_WHITELIST)
    calls = script_calls("run_sft_qwen25vl.sh", tmp_path, {"TRAIN_FILES": rl}, f"method={method}", "trainer.seed=3")
    convert, train = calls
    assert convert[:2] == ["-m", "data_prep.sft"] and ("--augment" in convert) == augment
    sft_file = convert[convert.index("--out") + 1]
    assert sft_file.endswith(f"sft/train_8shot_{method}.parquet")
    torchrun, overrides = sft_trainer_overrides(train)
    # verl's documented launch: torchrun sets RANK/WORLD_SIZE (a bare `python -m verl.trainer.sft_trainer` does not)
    assert torchrun[1:3] == ["-m", "torch.distributed.run"] and "--nproc_per_node=8" in torchrun
    config = compose_run(overrides, VERL_CONFIG_DIR, "sft_trainer_engine")
    assert config.data.train_files == sft_file and config.data.messages_key == "messages"
    assert "hf_model" in list(config.checkpoint.save_contents) and config.trainer.seed == 3
    assert config.trainer.n_gpus_per_node == 8 and config.trainer.nnodes == 1


def test_sft_script_refuses_an_rl_method(tmp_path):
    import subprocess

    env = {"PATH": "/usr/bin:/bin", "PYTHON": "/bin/false"}
    result = subprocess.run(
        ["bash", str(REPO / "examples" / "run_sft_qwen25vl.sh"), "method=grpo"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 2 and "not an SFT baseline" in result.stderr


def test_tiny_cpu_script_composes_and_validates(tmp_path):
    train = write_rows(tmp_path / "train.parquet", RS_WHITELIST)
    env = {"TRAIN_FILES": train, "VAL_FILES": train, "WORK_DIR": str(tmp_path / "work"), "STEPS": "3"}
    argv = script_argv("run_tiny_cpu.sh", tmp_path, env, "domain.constraint.weight=0.5")
    assert argv[:2] == ENTRY
    overrides = [a for a in argv[2:] if not a.startswith("hydra.")]  # Hydra's own run dir is not part of the config
    config = compose_run(overrides)
    _validate(config)
    assert config.trainer.device == "cpu" and config.actor_rollout_ref.rollout.name == "hf"
    assert config.algorithm.adv_estimator == "domain_grpo" and config.trainer.total_training_steps == 3
    assert config.domain.constraint.weight == 0.5  # extra arguments are Hydra overrides, applied last


def _run_script_calls_on_the_cpu_stand_in(calls: list[list[str]], tmp_path: Path) -> None:
    """Run a GPU script's interpreter calls for real; the SFT launcher's call gets `--cpu` (the CPU stand-in)."""
    import subprocess
    import sys

    for call in calls:
        sft = call[:2] == ["-m", "recipe.common.sft"] or call[:3] == ["-m", "recipe.pivot.sft", "train"]
        argv = [sys.executable, *call, *(["--cpu"] if sft else [])]
        proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"{call[:3]}\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"


@pytest.mark.slow
@pytest.mark.parametrize("script", ["run_sft_qwen25vl.sh", "run_pivot_sft.sh"])
def test_gpu_sft_script_command_line_starts_verls_trainer_on_the_cpu_stand_in(tmp_path, script):
    """The argv a GPU user's script produces, plus only `--cpu`, runs verl's SFT trainer (1 step) to a final_hf."""
    import pandas as pd

    from data_prep.sft import convert_rows, write_sft_parquet
    from verl_ext.cpu.tiny_qwen25vl import build_tiny_model_dir
    from verl_ext.cpu.tiny_task import build_tiny_task

    train, _ = build_tiny_task(tmp_path / "data")
    ckpt = tmp_path / "ckpt"
    env = {"MODEL_PATH": str(build_tiny_model_dir(tmp_path / "model")), "CKPT_DIR": str(ckpt)}
    env |= {"TRAIN_BATCH_SIZE": "2", "MICRO_BATCH_SIZE": "2", "TOTAL_EPOCHS": "1"}
    if script == "run_sft_qwen25vl.sh":
        env |= {"TRAIN_FILES": str(train), "TOTAL_STEPS": "1"}
        extra = []
    else:  # the transplant's stage 1 (vision tower and LLM frozen) on SFT rows that already exist
        sft_rows = write_sft_parquet(convert_rows(pd.read_parquet(train).to_dict("records")), tmp_path / "sft.parquet")
        env |= {"TRAIN_FILES": str(sft_rows), "STAGE": "projector"}
        extra = ["trainer.total_training_steps=1"]
    calls = script_calls(script, tmp_path, env, *extra)
    _run_script_calls_on_the_cpu_stand_in(calls, tmp_path)
    assert (ckpt / "final_hf" / "model.safetensors").is_file()
    assert (ckpt / "metrics.jsonl").read_text().count("train/loss") == 1
