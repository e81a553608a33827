"""Forgetting harness: what a training run changed on prior tasks, with paired bootstrap confidence intervals.

    python -m verl_ext.evaluation.forgetting evaluate --model DIR --tasks a=a.parquet,b=b.parquet --out EVAL_DIR
    python -m verl_ext.evaluation.forgetting compare --base BASE_EVAL_DIR --trained EVAL_DIR --out forgetting.json
    python -m verl_ext.evaluation.forgetting likelihood --model BASE --data name=sft.parquet --out likelihood.json

Per prior task, with the same rows evaluated before (base) and after (trained) training, paired by row index:
- `accuracy`: Δ = acc_trained − acc_base, with a paired bootstrap CI (rows resampled together);
- `valid_rate`: Δ of the rate of well-formed answers (one `<answer>` naming exactly one class);
- `answer_dist_accuracy`: Δ of the teacher-forced accuracy (argmax of the answer distribution over the row's
  classes, scored after each model's own reasoning up to `<answer>`), which does not need a well-formed answer;
- `answer_js`: mean JS divergence (bits, [0, 1]) between the base and trained answer distributions of each row.
`reading` then tells "forgot the knowledge" (generative AND teacher-forced accuracy fall) from "changed its answer
format" (the well-formed rate falls while teacher-forced accuracy holds); see `reading`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from verl_ext.evaluation import metrics as M

N_BOOT, ALPHA = 2000, 0.05


def paired_bootstrap(
    base: Sequence[float], trained: Sequence[float], n_boot: int = N_BOOT, seed: int = 0, alpha: float = ALPHA
) -> dict[str, float]:
    """Δ = mean(trained) − mean(base) over paired rows and its percentile bootstrap CI.

    Args:
        base: N per-row values (e.g. 1/0 correct) before training.
        trained: the same N rows after training, same order.
        n_boot: bootstrap resamples; each draws N row indices with replacement, shared by both runs (paired).
        seed: seed of the resampling.
        alpha: 1 − confidence (0.05 -> a 95 % interval).

    Returns:
        {"delta", "ci_low", "ci_high", "n"}; NaNs for no rows.

    Note:
        Percentile interval of the resampled mean difference; with 500 rows and accuracies near 50 % it is about
        ±4 points (shared/reference/studies.md §1).
    """
    a, b = np.asarray(base, dtype=np.float64), np.asarray(trained, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values need equal 1-D shapes, got {a.shape} and {b.shape}")
    if a.size == 0:
        return {"delta": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0}
    diff = b - a  # [N]
    idx = np.random.default_rng(seed).integers(0, diff.size, size=(n_boot, diff.size))  # [B, N]
    means = diff[idx].mean(axis=1)  # [B]
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return {"delta": float(diff.mean()), "ci_low": float(lo), "ci_high": float(hi), "n": int(diff.size)}


def _pair(base: Sequence[dict], trained: Sequence[dict]) -> list[tuple[dict, dict]]:
    """Records of the same row (by `index`) in both runs; raises when the runs evaluated different rows."""
    by_index = {r["index"]: r for r in trained}
    if set(by_index) != {r["index"] for r in base} or len(by_index) != len(trained):
        raise ValueError("base and trained evaluations cover different rows; evaluate both on the same task file")
    return [(r, by_index[r["index"]]) for r in base]


def _argmax_correct(record: dict) -> float:
    dist = record.get("answer_distribution") or {}
    return float(bool(dist) and max(dist, key=dist.get) == record["label"])


def compare_task(base: Sequence[dict], trained: Sequence[dict], seed: int = 0, n_boot: int = N_BOOT) -> dict[str, Any]:
    """The per-task forgetting numbers from two runs' original-view predictions (see the module docstring)."""
    pairs = _pair(base, trained)
    if pairs and "iou" in pairs[0][0]:  # grounding records: Acc@0.5 and IoU (verl_ext/evaluation/grounding.py)
        from verl_ext.evaluation.grounding import compare_grounding

        return compare_grounding(pairs, seed, n_boot)
    if pairs and "acc" in pairs[0][0]:  # jigsaw records: exact and hit
        exact = paired_bootstrap([b["acc"] for b, _ in pairs], [t["acc"] for _, t in pairs], n_boot, seed)
        hit = paired_bootstrap([b["hit"] for b, _ in pairs], [t["hit"] for _, t in pairs], n_boot, seed)
        valid = paired_bootstrap(
            [b["answer_valid"] for b, _ in pairs], [t["answer_valid"] for _, t in pairs], n_boot, seed
        )
        return {"kind": "jigsaw", "exact": exact, "hit": hit, "valid_rate": valid}
    correct = [
        [float(r["prediction"] is not None and r["prediction"] == r["label"]) for r in side] for side in zip(*pairs)
    ]
    valid = [[float(r["prediction"] is not None) for r in side] for side in zip(*pairs)]
    forced = [[_argmax_correct(r) for r in side] for side in zip(*pairs)]
    dists = [(b.get("answer_distribution"), t.get("answer_distribution")) for b, t in pairs]
    js = [M.js_divergence(list(d0.values()), [d1[k] for k in d0]) for d0, d1 in dists if d0 and d1]
    out = {
        "kind": "classification",
        "n": len(pairs),
        "base_accuracy": float(np.mean(correct[0])) if pairs else float("nan"),
        "trained_accuracy": float(np.mean(correct[1])) if pairs else float("nan"),
        "accuracy": paired_bootstrap(*correct, n_boot=n_boot, seed=seed) if pairs else paired_bootstrap([], []),
        "valid_rate": paired_bootstrap(*valid, n_boot=n_boot, seed=seed) if pairs else paired_bootstrap([], []),
        "answer_dist_accuracy": paired_bootstrap(*forced, n_boot=n_boot, seed=seed)
        if pairs
        else paired_bootstrap([], []),
        "answer_js": float(np.mean(js)) if js else float("nan"),
    }
    out["reading"] = reading(out)
    return out


def _significant(stat: Mapping[str, float], sign: int) -> bool:
    """The CI lies entirely below 0 (sign −1) or above 0 (sign +1)."""
    return stat["ci_high"] < 0 if sign < 0 else stat["ci_low"] > 0


def reading(task: Mapping[str, Any]) -> str:
    """A one-phrase reading of a classification task's change.

    - "no significant change": the accuracy CI contains 0;
    - "improved": the accuracy CI is above 0;
    - "answer format changed (knowledge kept)": accuracy fell, the teacher-forced accuracy did not fall significantly;
    - "forgot the knowledge": accuracy and the teacher-forced accuracy both fell (CIs below 0);
      "+ format" is added when the well-formed rate fell too.
    """
    acc, forced, valid = task["accuracy"], task["answer_dist_accuracy"], task["valid_rate"]
    if not _significant(acc, -1):
        return "improved" if _significant(acc, +1) else "no significant change"
    if not _significant(forced, -1):
        return "answer format changed (knowledge kept)"
    return "forgot the knowledge" + (" + format" if _significant(valid, -1) else "")


def compare_dirs(base_dir: str | Path, trained_dir: str | Path, tasks: Sequence[str] | None = None, seed: int = 0):
    """{task: compare_task(...)} for every task evaluated under both folders (or the named ones)."""
    from verl_ext.evaluation.tasks import METRICS, read_predictions

    base_dir, trained_dir = Path(base_dir), Path(trained_dir)
    names = tasks or sorted(
        p.parent.name for p in base_dir.glob(f"*/{METRICS}") if (trained_dir / p.parent.name / METRICS).exists()
    )
    if not names:
        raise ValueError(f"no task evaluated under both {base_dir} and {trained_dir}")
    return {n: compare_task(read_predictions(base_dir / n), read_predictions(trained_dir / n), seed) for n in names}


def _backend(args: argparse.Namespace):
    from verl_ext.evaluation.backends import make_backend

    kwargs = {"max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size, "seed": args.seed}
    if args.backend == "hf":
        kwargs |= {"device": args.device, "dtype": args.dtype}
    else:
        kwargs |= {"tensor_parallel_size": args.tensor_parallel_size, "max_model_len": args.max_model_len}
    return make_backend(args.backend, args.model, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """The parser with the `evaluate`, `compare` and `likelihood` subcommands."""
    p = argparse.ArgumentParser(prog="python -m verl_ext.evaluation.forgetting", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("evaluate", "likelihood"):
        s = sub.add_parser(name)
        s.add_argument("--model", required=True, help="local model directory")
        s.add_argument("--out", required=True, help="evaluate: output folder; likelihood: output JSON")
        s.add_argument("--backend", choices=("hf", "vllm"), default="hf")
        s.add_argument("--batch-size", type=int, default=8)
        s.add_argument("--max-new-tokens", type=int, default=256)
        s.add_argument("--limit", type=int, default=None, help="first N rows per task (likelihood: seeded N)")
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--device", default=None)
        s.add_argument("--dtype", default=None)
        s.add_argument("--tensor-parallel-size", type=int, default=1)
        s.add_argument("--max-model-len", type=int, default=4096)
        s.add_argument("--no-progress", action="store_true")
        if name == "evaluate":
            s.add_argument("--tasks", required=True, help="name=parquet[,name=parquet...]")
        else:
            s.add_argument("--data", action="append", required=True, help="name=SFT parquet (repeatable)")
    c = sub.add_parser("compare")
    c.add_argument("--base", required=True, help="the base model's evaluate folder")
    c.add_argument("--trained", required=True, help="the trained model's evaluate folder")
    c.add_argument("--out", required=True, help="output JSON")
    c.add_argument("--tasks", default=None, help="comma-separated task names (default: all evaluated in both)")
    c.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; a user error prints one line and exits 2."""
    from verl_ext.evaluation.runner import write_json_atomic

    args = build_parser().parse_args(argv)
    try:
        if args.command == "compare":
            names = [t.strip() for t in args.tasks.split(",")] if args.tasks else None
            result = compare_dirs(args.base, args.trained, names, args.seed)
            write_json_atomic(args.out, result)
            for name, task in result.items():
                key = "exact" if task["kind"] == "jigsaw" else "accuracy"
                stat = task[key]
                print(
                    f"{name}: Δ{key} {stat['delta']:+.4f} [{stat['ci_low']:+.4f}, {stat['ci_high']:+.4f}]"
                    + (f"  {task['reading']}" if "reading" in task else "")
                )
            return 0
        from verl_ext.evaluation.tasks import evaluate_tasks, parse_tasks

        if args.command == "evaluate":
            tasks = parse_tasks(args.tasks)
            missing = [p for p in tasks.values() if not Path(p).is_file()]
            if missing:
                raise ValueError(f"task file(s) not found: {missing}")
            info = {"model": str(args.model), "backend": args.backend, "seed": args.seed}
            evaluate_tasks(
                _backend(args), tasks, args.out, args.batch_size, args.limit, info, show_progress=not args.no_progress
            )
            return 0
        from verl_ext.evaluation.likelihood import data_likelihood

        datasets = parse_tasks(args.data)
        result = data_likelihood(_backend(args), datasets, args.limit, args.batch_size, args.seed)
        write_json_atomic(args.out, {"model": str(args.model), "datasets": result})
        for name, summary in result.items():
            print(f"{name}: mean per-token log-likelihood {summary['mean_token_logprob']:.4f} on {summary['n']} rows")
        return 0
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
