"""Stop the study early when GRPO's correct rollouts are too few for the SFT-on-rollouts arm.

    python -m recipe.novel_task.guard --dump ROLLOUT_DIR --min-rows 64 [--min-score max] [--allow-truncated]

Runs right after the GRPO step (before any SFT arm trains): counts the training images with at least one correct,
untruncated rollout (`recipe.novel_task.rollouts.select_correct`, the same selection `to-sft` makes) and exits 2 with
one line saying what to change when fewer than `--min-rows` images have one. Without it, a GRPO run at lr 1e-6 with
few exact answers lets the answer-only arm train for hours before `to-sft` stops with "no rows to write".
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from recipe.novel_task.rollouts import read_dump, select_correct
from verl_ext.jigsaw import max_score


def check(records: list[dict[str, Any]], min_rows: int, min_score: float, allow_truncated: bool = False) -> dict:
    """{"rows_covered", "kept", "rollouts", "ok"} for the rollouts of a dump (at most one per image, as `to-sft`)."""
    kept, counts = select_correct(records, min_score, 1, allow_truncated)
    rows = len({int(r["row_index"]) for r in kept})
    return {"rows_covered": rows, "kept": len(kept), "rollouts": counts["rollouts"], "ok": rows >= min_rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m recipe.novel_task.guard", description=__doc__.splitlines()[0])
    p.add_argument("--dump", required=True, help="the GRPO run's rollout folder (trainer.rollout_data_dir)")
    p.add_argument("--min-rows", type=int, required=True, help="images with a correct rollout needed (>= 1)")
    p.add_argument("--min-score", default="max", help="'max' (the jigsaw reward's maximum, 3) or a number")
    p.add_argument("--allow-truncated", action="store_true", help="count truncated rollouts (CPU smoke runs only)")
    args = p.parse_args(argv)
    try:
        if args.min_rows < 1:
            raise ValueError(f"--min-rows must be >= 1, got {args.min_rows}")
        min_score = max_score() if args.min_score == "max" else float(args.min_score)
        result = check(read_dump(args.dump), args.min_rows, min_score, args.allow_truncated)
    except (ValueError, FileNotFoundError, json.JSONDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not result["ok"]:
        print(
            f"error: GRPO's rollouts in {args.dump} give a correct answer (score >= {min_score:g}, untruncated) for "
            f"{result['rows_covered']} images, fewer than --min-rows {args.min_rows} needed for the SFT-on-rollouts "
            "arm: train GRPO longer or at a higher lr, sample the trained model (python -m recipe.novel_task.rollouts "
            "sample), or lower vars.min_rollout_rows",
            file=sys.stderr,
        )
        return 2
    print(f"guard: {result['rows_covered']} images with a correct rollout (need {args.min_rows}) in {args.dump}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
