"""recipe.common.sft: verl's documented torchrun command on GPU; the same command line on the CPU stand-in."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from recipe.common.sft import command_from_cli, link_final_hf, main, model_problem, sft_command, torchrun_flags

OVERRIDES = ["data.train_batch_size=16", "model.use_remove_padding=true", "trainer.logger=[console,wandb]"]


def test_gpu_command_is_torchrun_of_verls_sft_trainer() -> None:
    argv, env = sft_command("t.parquet", "/m", "/ckpt", OVERRIDES, steps=5, nproc_per_node=4)
    assert argv[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert argv[3:6] == ["--standalone", "--nnodes=1", "--nproc_per_node=4"]
    assert argv[6:8] == ["-m", "verl.trainer.sft_trainer"]
    assert argv[8:] == [
        "data.train_files=t.parquet",
        "data.val_files=null",
        "data.messages_key=messages",
        "model.path=/m",
        "trainer.default_local_dir=/ckpt",
        "trainer.total_training_steps=5",
        "trainer.nnodes=1",
        "trainer.n_gpus_per_node=4",
        *OVERRIDES,
    ]
    assert env == dict(__import__("os").environ)  # GPU: the caller's environment, no stand-in


def test_several_nodes_need_the_rendezvous() -> None:
    assert torchrun_flags(2, 8, 1, "10.0.0.1", None) == [
        "--nnodes=2",
        "--nproc_per_node=8",
        "--node_rank=1",
        "--master_addr=10.0.0.1",
        "--master_port=29500",
    ]
    with pytest.raises(ValueError, match="--node-rank and --master-addr"):
        torchrun_flags(2, 8, None, None, None)
    with pytest.raises(ValueError, match="must be >= 1"):
        torchrun_flags(1, 0, None, None, None)


def test_cpu_command_is_the_same_command_line_on_one_rank_with_the_stand_in_last(tmp_path, capsys) -> None:
    from verl_ext.cpu.sft import CPU_SFT_ENV, CPU_SFT_OVERRIDES

    gpu, _ = sft_command("t.parquet", "/m", tmp_path / "ckpt", OVERRIDES, steps=5)
    cpu, env = sft_command("t.parquet", "/m", tmp_path / "ckpt", OVERRIDES, steps=5, cpu=True)
    assert cpu[3:6] == ["--standalone", "--nnodes=1", "--nproc_per_node=1"]
    keys = gpu[8:14]  # the launcher's own keys, then (GPU) the hardware keys, then the caller's overrides
    assert cpu[8:] == [*keys, *OVERRIDES, *CPU_SFT_OVERRIDES]
    assert {k: env[k] for k in CPU_SFT_ENV} == CPU_SFT_ENV
    assert env["VERL_FILE_LOGGER_PATH"] == str(tmp_path / "ckpt" / "metrics.jsonl") and (tmp_path / "ckpt").is_dir()
    # the keys the stand-in replaces are named, not silently dropped
    assert "model.use_remove_padding, trainer.logger" in capsys.readouterr().err


def test_cli_flags_overrides_and_refusals(tmp_path) -> None:
    cmd, _, args = command_from_cli(
        ["--train-files", "t", "--model", "/m", "--out", "o", "a.b=1", "--nproc-per-node", "2"]
    )
    assert cmd[5] == "--nproc_per_node=2" and cmd[-1] == "a.b=1" and not args.cpu
    with pytest.raises(ValueError, match="unknown flag"):
        command_from_cli(["--train-files", "t", "--model", "/m", "--out", "o", "--stpes", "3"])
    assert main(["--train-files", "t", "--model", str(tmp_path), "--out", "o"]) == 2  # a folder without config.json
    assert model_problem(str(tmp_path)) == "no config.json" and model_problem("/no/such/model") == "no such folder"
    assert model_problem("Qwen/Qwen2.5-VL-3B-Instruct") is None  # a hub id: verl loads it


def test_final_hf_link_follows_verls_marker(tmp_path: Path) -> None:
    assert link_final_hf(tmp_path) is None
    (tmp_path / "global_step_7" / "huggingface").mkdir(parents=True)
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("7\n")
    assert link_final_hf(tmp_path) is None  # an interrupted save (no config.json) is no checkpoint
    (tmp_path / "global_step_7" / "huggingface" / "config.json").write_text("{}")
    link = link_final_hf(tmp_path)
    assert link == tmp_path / "final_hf" and link.resolve() == (tmp_path / "global_step_7" / "huggingface").resolve()
    assert link_final_hf(tmp_path) == link  # a rerun replaces the link
