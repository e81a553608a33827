"""CPU stand-in launcher of verl's own SFT trainer for the study's CPU spec (tests, demo): `verl_ext.cpu.sft`'s
command (torchrun + `verl.trainer.sft_trainer` + the CPU overrides), run as one step of the study.

    python -m recipe.novel_task.cpu_sft --train-files sft.parquet --model TINY --out CKPT --steps 2 [--batch-size 2]

Writes verl's checkpoints under --out, the file-logger metrics at <out>/metrics.jsonl and a `final_hf` link to the
last step's HF weights (as `examples/final_hf.sh` does on GPU). Never used on the GPU path.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from verl_ext.cpu.sft import final_hf_dir, sft_command


def main(argv: list[str] | None = None) -> int:
    """Run verl's SFT trainer on CPU; returns its exit code."""
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
    argv_, env = sft_command(
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
    code = subprocess.run(argv_, env=env).returncode
    if code == 0:
        link = os.path.join(args.out, "final_hf")
        if os.path.islink(link):
            os.unlink(link)
        os.symlink(os.path.relpath(final_hf_dir(args.out, args.steps), args.out), link)
    return code


if __name__ == "__main__":
    sys.exit(main())
