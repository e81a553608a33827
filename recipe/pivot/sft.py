"""verl's own SFT trainer for the PIVOT study: the SFT baseline and the two transplant stages, with real freezing.

    python -m recipe.pivot.sft rows --pairs data/pairs/pairs.parquet --out data/pairs/sft.parquet
    python -m recipe.pivot.sft train --stage all --train data/pairs/sft.parquet --model BASE --out ckpt/sft [overrides]
    python -m recipe.pivot.sft train --stage projector --model runs/transplant_dpo --out ckpt/stage1 ... --cpu --steps 2

`rows`: the SFT rows of a preference parquet (`data_prep preference-pairs`): the prompt + the CHOSEN response as the
assistant turn, the same images — so SFT and DPO train on the same items (the paper's SFT baseline: the same data
with the chosen response). verl's `MultiTurnSFTDataset` reads `messages` + `images`.

`train`: `torchrun -m verl.trainer.sft_trainer` (GPU; `--cpu` runs verl_ext.cpu's stand-in command) plus the stage's
freeze overrides; afterwards `<out>/final_hf` links the last checkpoint's HF weights. Stages:

| stage | trains | frozen (through `engine._target_=recipe.pivot.freeze.PivotFSDPEngineConfig`) |
|---|---|---|
| `all` | encoder, projector, LLM (the SFT baseline) | nothing (verl's own engine config) |
| `projector` | projector (transplant stage 1) | `+engine.freeze_vision_tower=true +engine.freeze_language_model=true` |
| `projector_llm` | projector + LLM (transplant stage 2) | `+engine.freeze_vision_tower=true` |

Extra arguments are Hydra overrides of verl's `sft_trainer_engine`, applied last.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from recipe.common.runs import final_hf

STAGES = {"all": (False, False), "projector": (True, True), "projector_llm": (True, False)}
CONFIG_TARGET = "recipe.pivot.freeze.PivotFSDPEngineConfig"


def stage_overrides(stage: str) -> list[str]:
    """verl SFT overrides that freeze what `stage` keeps fixed (`STAGES`: (vision tower, language model))."""
    if stage not in STAGES:
        raise ValueError(f"--stage {stage!r}: choose one of {list(STAGES)}")
    vision, language = STAGES[stage]
    if not (vision or language):
        return []
    return [
        f"engine._target_={CONFIG_TARGET}",
        f"+engine.freeze_vision_tower={str(vision).lower()}",
        f"+engine.freeze_language_model={str(language).lower()}",
    ]


def sft_rows(pairs: str | os.PathLike, out: str | os.PathLike) -> int:
    """Write the SFT rows (prompt + chosen response) of a preference parquet; returns the row count."""
    import pandas as pd

    from verl_ext.cpu.tiny_task import write_parquet

    rows = []
    for row in pd.read_parquet(pairs).to_dict(orient="records"):
        messages = [dict(m) for m in row["prompt"]] + [{"role": "assistant", "content": row["chosen"]}]
        images = [dict(im) for im in row["images"]]
        rows.append({"messages": messages, "images": images, "data_source": row["data_source"]})
    if not rows:
        raise ValueError(f"{pairs}: no rows")
    write_parquet(rows, out)
    return len(rows)


def train_command(
    stage: str,
    train: str,
    model: str,
    out: str,
    overrides: Sequence[str] = (),
    cpu: bool = False,
    steps: int | None = None,
    nnodes: int = 1,
    nproc: int = 8,
) -> tuple[list[str], dict[str, str]]:
    """argv and environment of one SFT run (no shell)."""
    freeze = stage_overrides(stage)
    if cpu:
        from verl_ext.cpu.sft import sft_command

        return sft_command(train, model, out, steps=steps or 2, overrides=[*freeze, *overrides])
    argv = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nnodes={nnodes}",
        f"--nproc_per_node={nproc}",
        *(["--standalone"] if nnodes == 1 else []),
        "-m",
        "verl.trainer.sft_trainer",
        f"data.train_files={train}",
        "data.val_files=null",
        "data.messages_key=messages",
        f"model.path={model}",
        f"trainer.default_local_dir={out}",
        f"trainer.nnodes={nnodes}",
        f"trainer.n_gpus_per_node={nproc}",
        *([f"trainer.total_training_steps={steps}"] if steps else []),
        *freeze,
        *overrides,
    ]
    return argv, dict(os.environ)


def link_final_hf(out: str | os.PathLike) -> Path | None:
    """`<out>/final_hf` -> the HF weights of verl's last checkpoint (`recipe.common.runs.final_hf`; None if none)."""
    out = Path(out)
    found = final_hf(out)
    if found is None:
        return None
    link = out / "final_hf"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(found.relative_to(out))
    return link


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipe.pivot.sft", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rows = sub.add_parser("rows", help="SFT rows (prompt + chosen) of a preference parquet")
    rows.add_argument("--pairs", required=True)
    rows.add_argument("--out", required=True)
    train = sub.add_parser("train", help="run verl's SFT trainer for a stage")
    train.add_argument("--stage", default="all", choices=list(STAGES))
    train.add_argument("--train", required=True, help="SFT parquet (messages + images)")
    train.add_argument("--model", required=True, help="HF model folder to start from")
    train.add_argument("--out", required=True, help="trainer.default_local_dir")
    train.add_argument("--cpu", action="store_true", help="verl_ext.cpu's stand-in command (tests, demo)")
    train.add_argument("--steps", type=int, default=None, help="trainer.total_training_steps")
    train.add_argument("--nnodes", type=int, default=int(os.environ.get("NNODES", 1)))
    train.add_argument("--nproc", type=int, default=int(os.environ.get("N_GPUS", 8)), help="GPUs per node")
    args, overrides = parser.parse_known_args(argv)
    if args.command == "rows":
        try:
            n = sft_rows(args.pairs, args.out)
        except (OSError, ValueError, KeyError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"wrote {n} SFT rows to {args.out}")
        return 0
    if not (Path(args.model) / "config.json").is_file():
        print(f"error: --model {args.model}: no config.json", file=sys.stderr)
        return 2
    cmd, env = train_command(
        args.stage, args.train, args.model, args.out, overrides, args.cpu, args.steps, args.nnodes, args.nproc
    )
    code = subprocess.run(cmd, env=env).returncode
    if code == 0:
        link_final_hf(args.out)
    return code


if __name__ == "__main__":
    sys.exit(main())
