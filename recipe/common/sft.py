"""The one launcher of verl 0.9.1's own SFT trainer (`verl.trainer.sft_trainer`): every SFT path of the recipes.

    python -m recipe.common.sft --train-files sft.parquet --model BASE --out CKPT [--nnodes 1 --nproc-per-node 8]
        [--steps N] [--cpu] [hydra overrides of verl's sft_trainer_engine ...]

GPU (default): verl's documented command, `torchrun --standalone --nnodes=1 --nproc_per_node=K -m
verl.trainer.sft_trainer <overrides>` (several nodes: `--nnodes=N --node_rank=R --master_addr=A --master_port=P`
instead of `--standalone`, from `--node-rank`/`--master-addr`/`--master-port` or the `NODE_RANK`/`MASTER_ADDR`/
`MASTER_PORT` variables). torchrun sets the RANK/WORLD_SIZE variables verl's process-group set-up needs; a bare
`python -m verl.trainer.sft_trainer` stops with "RANK expected, but not set".
`--cpu`: the same command line on the CPU stand-ins (tests, the demo, the studies' CPU specs): one torchrun rank
(`--standalone --nproc_per_node=1`), the stand-in environment and settings of `verl_ext/cpu/sft.py` (the cpu platform
and gloo through `VERL_PLATFORM`/`VERL_USE_EXTERNAL_MODULES`, sdpa attention, fp32 FSDP2, no dataloader workers,
file logger at `<out>/metrics.jsonl`) appended after the caller's overrides, which they replace where both set a key
(the launcher names those keys on stderr). So a GPU launch script's command line plus `--cpu` runs on a CPU.

Afterwards `<out>/final_hf` links the last checkpoint's Hugging Face weights (`global_step_<N>/huggingface`, from
verl's `latest_checkpointed_iteration.txt`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from recipe.common.runs import final_hf

TORCHRUN = ("-m", "torch.distributed.run")
SFT_TRAINER = ("-m", "verl.trainer.sft_trainer")
FINAL_HF = "final_hf"


def torchrun_flags(
    nnodes: int, nproc_per_node: int, node_rank: int | None, master_addr: str | None, master_port: int | None
) -> list[str]:
    """torchrun's process flags: `--standalone` on one node, else the rendezvous of node `node_rank`."""
    if nnodes < 1 or nproc_per_node < 1:
        raise ValueError(f"--nnodes={nnodes} and --nproc-per-node={nproc_per_node} must be >= 1")
    if nnodes == 1:
        return ["--standalone", "--nnodes=1", f"--nproc_per_node={nproc_per_node}"]
    missing = [flag for flag, value in (("--node-rank", node_rank), ("--master-addr", master_addr)) if value is None]
    if missing:
        raise ValueError(f"--nnodes={nnodes}: set {' and '.join(missing)} (or NODE_RANK / MASTER_ADDR) on every node")
    return [
        f"--nnodes={nnodes}",
        f"--nproc_per_node={nproc_per_node}",
        f"--node_rank={node_rank}",
        f"--master_addr={master_addr}",
        f"--master_port={master_port or 29500}",
    ]


def sft_command(
    train_files: str | os.PathLike,
    model_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    overrides: Sequence[str] = (),
    steps: int | None = None,
    nnodes: int = 1,
    nproc_per_node: int = 8,
    node_rank: int | None = None,
    master_addr: str | None = None,
    master_port: int | None = None,
    cpu: bool = False,
) -> tuple[list[str], dict[str, str]]:
    """argv and environment of one run of verl's SFT trainer (no shell).

    Args:
        train_files: SFT parquet (verl's multi-turn layout: `messages` + `images`; `data_prep/sft.py` writes it).
        model_path: HF model folder to start from.
        out_dir: `trainer.default_local_dir`; the last step's HF weights land in `global_step_<N>/huggingface`.
        overrides: Hydra overrides of verl's `sft_trainer_engine`, after the launcher's own keys.
        steps: `trainer.total_training_steps` (None: verl's epochs decide).
        nnodes, nproc_per_node, node_rank, master_addr, master_port: torchrun's (GPU; `cpu` runs one rank).
        cpu: the CPU stand-in (see the module docstring); creates `out_dir` (verl's file logger needs it first).
    """
    keys = [
        f"data.train_files={train_files}",
        "data.val_files=null",
        "data.messages_key=messages",
        f"model.path={model_path}",
        f"trainer.default_local_dir={out_dir}",
        *([f"trainer.total_training_steps={steps}"] if steps is not None else []),
    ]
    if not cpu:
        flags = torchrun_flags(nnodes, nproc_per_node, node_rank, master_addr, master_port)
        hardware = [f"trainer.nnodes={nnodes}", f"trainer.n_gpus_per_node={nproc_per_node}"]
        return [sys.executable, *TORCHRUN, *flags, *SFT_TRAINER, *keys, *hardware, *overrides], dict(os.environ)
    from verl_ext.cpu.sft import CPU_SFT_ENV, CPU_SFT_OVERRIDES  # the stand-in: never on the GPU path

    replaced = sorted(
        {o.split("=", 1)[0].lstrip("+~") for o in overrides}
        & {o.split("=", 1)[0].lstrip("+~") for o in CPU_SFT_OVERRIDES}
    )
    if replaced:
        print(f"recipe.common.sft --cpu: the CPU stand-in sets {', '.join(replaced)}", file=sys.stderr)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    flags = torchrun_flags(1, 1, None, None, None)
    argv = [sys.executable, *TORCHRUN, *flags, *SFT_TRAINER, *keys, *overrides, *CPU_SFT_OVERRIDES]
    env = dict(os.environ, **CPU_SFT_ENV, VERL_FILE_LOGGER_PATH=str(out / "metrics.jsonl"), PYTHONUNBUFFERED="1")
    return argv, env


def cpu_sft_command(
    train_files: str | os.PathLike,
    model_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    steps: int,
    overrides: Sequence[str] = (),
    batch_size: int = 4,
    micro_batch_size: int = 2,
    max_length: int = 1024,
    lr: float = 1e-3,
) -> tuple[list[str], dict[str, str]]:
    """:func:`sft_command` on the CPU stand-in with the tiny runs' sizes (tests, demo) before `overrides`."""
    sizes = [
        f"data.train_batch_size={batch_size}",
        f"data.micro_batch_size_per_gpu={micro_batch_size}",
        f"data.max_length={max_length}",
        f"optim.lr={lr}",
    ]
    return sft_command(train_files, model_path, out_dir, [*sizes, *overrides], steps=steps, cpu=True)


def run_and_link(cmd: Sequence[str], env: dict[str, str], out_dir: str | os.PathLike) -> int:
    """Run one SFT command; on success link `<out>/final_hf` to its last checkpoint. Returns the exit code."""
    code = subprocess.run(list(cmd), env=env).returncode
    if code == 0:
        link_final_hf(out_dir)
    return code


def link_final_hf(out_dir: str | os.PathLike) -> Path | None:
    """`<out>/final_hf` -> the HF weights of verl's last checkpoint (`recipe.common.runs.final_hf`; None if none)."""
    out = Path(out_dir)
    found = final_hf(out)
    if found is None:
        return None
    link = out / FINAL_HF
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(found.relative_to(out))
    return link


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m recipe.common.sft", description=__doc__.splitlines()[0])
    p.add_argument("--train-files", required=True, help="SFT parquet (messages + images)")
    p.add_argument("--model", required=True, help="HF model folder to start from")
    p.add_argument("--out", required=True, help="trainer.default_local_dir")
    p.add_argument("--steps", type=int, default=None, help="trainer.total_training_steps (default: epochs decide)")
    p.add_argument("--nnodes", type=int, default=1)
    p.add_argument("--nproc-per-node", type=int, default=8, help="GPUs per node")
    p.add_argument("--node-rank", type=int, default=_env_int("NODE_RANK"), help="default: $NODE_RANK")
    p.add_argument("--master-addr", default=os.environ.get("MASTER_ADDR"), help="default: $MASTER_ADDR")
    p.add_argument("--master-port", type=int, default=_env_int("MASTER_PORT"), help="default: $MASTER_PORT or 29500")
    p.add_argument("--cpu", action="store_true", help="the CPU stand-in (tests, demo, CPU study specs)")
    return p


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else None


def command_from_cli(argv: Sequence[str]) -> tuple[list[str], dict[str, str], argparse.Namespace]:
    """The command :func:`main` runs for `argv` (flags above; everything else is a Hydra override)."""
    args, overrides = parser().parse_known_args(list(argv))
    bad = [o for o in overrides if o.startswith("-")]
    if bad:
        raise ValueError(f"unknown flag(s) {bad}; Hydra overrides are key=value")
    cmd, env = sft_command(
        args.train_files,
        args.model,
        args.out,
        overrides,
        args.steps,
        args.nnodes,
        args.nproc_per_node,
        args.node_rank,
        args.master_addr,
        args.master_port,
        args.cpu,
    )
    return cmd, env, args


def model_problem(model: str) -> str | None:
    """Why `model` cannot be loaded (a folder without `config.json`, a missing path), or None; a Hugging Face hub id
    (`org/name`, no such local path) is left to verl."""
    path = Path(model)
    if path.is_dir():
        return None if (path / "config.json").is_file() else "no config.json"
    looks_like_path = path.is_absolute() or model.startswith(".") or model.count("/") != 1
    return "no such folder" if looks_like_path else None


def main(argv: Sequence[str] | None = None) -> int:
    """Run verl's SFT trainer; link `<out>/final_hf` after a successful run. Returns its exit code."""
    try:
        cmd, env, args = command_from_cli(sys.argv[1:] if argv is None else argv)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    problem = model_problem(args.model)
    if problem:
        print(f"error: --model {args.model}: {problem}", file=sys.stderr)
        return 2
    return run_and_link(cmd, env, args.out)


if __name__ == "__main__":
    sys.exit(main())
