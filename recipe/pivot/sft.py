"""verl's own SFT trainer for the PIVOT study: the SFT baseline and the two transplant stages, with real freezing.

    python -m recipe.pivot.sft rows --pairs data/pairs/pairs.parquet --out data/pairs/sft.parquet
    python -m recipe.pivot.sft train --stage all --train data/pairs/sft.parquet --model BASE --out ckpt/sft [overrides]
    python -m recipe.pivot.sft train --stage projector --model runs/transplant_dpo --out ckpt/stage1 ... --cpu --steps 2

`rows`: the SFT rows of a preference parquet (`data_prep preference-pairs`; `data_prep/sft.py`): the prompt + the
CHOSEN response as the assistant turn, the same images — so SFT and DPO train on the same items (the paper's SFT
baseline: the same data with the chosen response). verl's `MultiTurnSFTDataset` reads `messages` + `images`.

`train`: the recipes' SFT launcher (`recipe/common/sft.py`: `torchrun -m verl.trainer.sft_trainer` on GPU; `--cpu`
the CPU stand-in) plus the stage's freeze overrides; afterwards `<out>/final_hf` links the last checkpoint's HF
weights. Stages:

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
import sys
from collections.abc import Sequence

from recipe.common.sft import cpu_sft_command, link_final_hf, model_problem, run_and_link, sft_command

__all__ = ["STAGES", "link_final_hf", "sft_rows", "stage_overrides", "train_command"]

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

    from data_prep.sft import preference_sft_rows, write_sft_parquet

    rows = preference_sft_rows(pd.read_parquet(pairs).to_dict(orient="records"))
    if not rows:
        raise ValueError(f"{pairs}: no rows")
    write_sft_parquet(rows, out, from_records=True)
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
    """argv and environment of one SFT run (no shell): the recipes' launcher with the stage's freeze overrides."""
    freeze = stage_overrides(stage)
    if cpu:
        return cpu_sft_command(train, model, out, steps or 2, [*freeze, *overrides])  # the tiny runs' sizes
    node_rank, master = os.environ.get("NODE_RANK"), os.environ.get("MASTER_ADDR")
    port = os.environ.get("MASTER_PORT")
    return sft_command(
        train,
        model,
        out,
        [*freeze, *overrides],
        steps=steps,
        nnodes=nnodes,
        nproc_per_node=nproc,
        node_rank=int(node_rank) if node_rank else None,
        master_addr=master,
        master_port=int(port) if port else None,
    )


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
    train.add_argument("--cpu", action="store_true", help="the launcher's CPU stand-in (tests, demo)")
    train.add_argument("--steps", type=int, default=None, help="trainer.total_training_steps")
    train.add_argument("--nnodes", type=int, default=int(os.environ.get("NNODES", 1)), help="$NODE_RANK, $MASTER_ADDR")
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
    problem = model_problem(args.model)
    if problem:
        print(f"error: --model {args.model}: {problem}", file=sys.stderr)
        return 2
    cmd, env = train_command(
        args.stage, args.train, args.model, args.out, overrides, args.cpu, args.steps, args.nnodes, args.nproc
    )
    return run_and_link(cmd, env, args.out)


if __name__ == "__main__":
    sys.exit(main())
