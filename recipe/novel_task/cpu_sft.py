"""The study's CPU SFT step (tests, demo): the recipes' SFT launcher (`recipe/common/sft.py`) with `--cpu` and the
tiny runs' sizes as flags.

    python -m recipe.novel_task.cpu_sft --train-files sft.parquet --model TINY --out CKPT --steps 2 [--batch-size 2]

Writes verl's checkpoints under --out, the file-logger metrics at <out>/metrics.jsonl and a `final_hf` link to the
last step's HF weights (the launcher's, as on GPU). Extra arguments are Hydra overrides of verl's sft_trainer_engine.
"""

from __future__ import annotations

import argparse
import sys

from recipe.common.sft import cpu_sft_command, run_and_link


def main(argv: list[str] | None = None) -> int:
    """Run verl's SFT trainer on the CPU stand-in; returns its exit code."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-files", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--micro-batch-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--max-length", type=int, default=1024)
    args, overrides = p.parse_known_args(argv)
    cmd, env = cpu_sft_command(
        args.train_files,
        args.model,
        args.out,
        args.steps,
        overrides,
        args.batch_size,
        args.micro_batch_size,
        args.max_length,
        args.lr,
    )
    return run_and_link(cmd, env, args.out)


if __name__ == "__main__":
    sys.exit(main())
