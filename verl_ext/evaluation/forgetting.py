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

Checked before anything is evaluated (`check_task_files`, `check_cached`): a task name is one folder name (no `/`);
a task file's row ids (`extra_info.index`, what the runs are paired by) are unique; a classification task's rows
each have >= 2 `extra_info.class_names` (with fewer, the teacher-forced answer is the label by construction:
accuracy 1 for any model); a task already evaluated under `--out` is reused only when it was evaluated with the
same model, data file, limit, backend, seed and max_new_tokens (else refused: one `--out` folder per model).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from verl_ext.evaluation import metrics as M
from verl_ext.stats import separation

N_BOOT, ALPHA = 2000, 0.05
TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # one folder under --out
# run-info keys a reused evaluation must share with the current run (paths compared resolved)
CACHE_KEYS = ("model", "data", "limit", "backend", "seed", "max_new_tokens")


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


def _pair(
    base: Sequence[dict], trained: Sequence[dict], where: tuple[str, str] = ("base", "trained")
) -> list[tuple[dict, dict]]:
    """Records of the same row (by `index`) in both runs; raises on repeated row ids (naming `where`) or when the
    runs evaluated different rows."""
    for side, records in zip(where, (base, trained), strict=True):
        repeated = sorted(i for i, n in Counter(r["index"] for r in records).items() if n > 1)
        if repeated:
            raise ValueError(
                f"{side}: row ids {repeated[:5]} occur more than once ({len(repeated)} repeated): the task file "
                "repeats extra_info.index, and rows are paired by it; give every row its own index"
            )
    by_index = {r["index"]: r for r in trained}
    if set(by_index) != {r["index"] for r in base} or len(by_index) != len(trained):
        raise ValueError("base and trained evaluations cover different rows; evaluate both on the same task file")
    return [(r, by_index[r["index"]]) for r in base]


def _argmax_correct(record: dict) -> float:
    dist = record.get("answer_distribution") or {}
    return float(bool(dist) and max(dist, key=dist.get) == record["label"])


def compare_task(
    base: Sequence[dict],
    trained: Sequence[dict],
    seed: int = 0,
    n_boot: int = N_BOOT,
    where: tuple[str, str] = ("base", "trained"),
) -> dict[str, Any]:
    """The per-task forgetting numbers from two runs' original-view predictions (see the module docstring).

    Raises:
        ValueError: repeated row ids, different rows, or classification rows scored over fewer than 2 classes.
    """
    pairs = _pair(base, trained, where)
    if pairs and "iou" in pairs[0][0]:  # grounding records: Acc@0.5 and IoU (verl_ext/evaluation/grounding.py)
        from verl_ext.evaluation.grounding import compare_grounding

        return compare_grounding(pairs, paired_bootstrap, seed, n_boot)
    if pairs and "acc" in pairs[0][0]:  # jigsaw records: exact and hit
        exact = paired_bootstrap([b["acc"] for b, _ in pairs], [t["acc"] for _, t in pairs], n_boot, seed)
        hit = paired_bootstrap([b["hit"] for b, _ in pairs], [t["hit"] for _, t in pairs], n_boot, seed)
        valid = paired_bootstrap(
            [b["answer_valid"] for b, _ in pairs], [t["answer_valid"] for _, t in pairs], n_boot, seed
        )
        return {"kind": "jigsaw", "exact": exact, "hit": hit, "valid_rate": valid}
    narrow = sum(1 for b, t in pairs for r in (b, t) if len(r.get("answer_distribution") or {}) < 2)
    if narrow:
        raise ValueError(
            f"{where[0]}: {narrow} records have a teacher-forced answer distribution over fewer than 2 classes (rows "
            "without extra_info.class_names): its accuracy is 1 by construction; give the task's rows their vocabulary"
        )
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
    return separation(stat["ci_low"], stat["ci_high"]) == (-1 if sign < 0 else 1)


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
    out = {}
    for n in names:
        where = tuple(f"{d / n} (data {_run(d / n).get('data')})" for d in (base_dir, trained_dir))
        out[n] = compare_task(read_predictions(base_dir / n), read_predictions(trained_dir / n), seed, where=where)
    return out


def _run(task_dir: Path) -> dict[str, Any]:
    """The `run` info an evaluated task's metrics.json records ({} when absent)."""
    from verl_ext.evaluation.tasks import METRICS

    path = task_dir / METRICS
    return dict(json.loads(path.read_text()).get("run") or {}) if path.is_file() else {}


def check_task_files(tasks: Mapping[str, str]) -> None:
    """Refuse, before a model is loaded, task names that are not one folder name, task files with repeated row ids
    and classification rows with fewer than 2 `extra_info.class_names` (see the module docstring)."""
    import pyarrow.parquet as pq

    from verl_ext.evaluation.tasks import task_kind

    for name, path in tasks.items():
        if not TASK_NAME.fullmatch(name):
            raise ValueError(
                f"task name {name!r}: it names a folder under --out, so it may hold only letters, digits, '_', '-' "
                "and '.' (no '/')"
            )
        if not Path(path).is_file():
            raise ValueError(f"task {name}: file not found: {path}")
        infos = [info or {} for info in pq.read_table(path, columns=["extra_info"]).column("extra_info").to_pylist()]
        counts = Counter(info.get("index", i) for i, info in enumerate(infos))
        repeated = sorted(i for i, n in counts.items() if n > 1)
        if repeated:
            raise ValueError(
                f"task {name}: {path} repeats row ids (extra_info.index {repeated[:5]}, {len(repeated)} repeated); the "
                "base and trained runs are paired by it: give every row its own index"
            )
        if task_kind(path) == "classification":
            narrow = sum(1 for info in infos if len(info.get("class_names") or []) < 2)
            if narrow:
                raise ValueError(
                    f"task {name}: {narrow} of {len(infos)} rows of {path} have fewer than 2 extra_info.class_names: "
                    "the teacher-forced answer would be the label by construction (accuracy 1 for any model); give "
                    "the rows their answer vocabulary (python -m data_prep writes it)"
                )


def _same(key: str, a: Any, b: Any) -> bool:
    if key in ("model", "data") and a is not None and b is not None:
        return Path(str(a)).resolve() == Path(str(b)).resolve()
    return a == b


def check_cached(tasks: Mapping[str, str], out_dir: str | Path, run: Mapping[str, Any]) -> None:
    """A task already evaluated under `out_dir` is reused only if its recorded run has the same `CACHE_KEYS` as
    `run` (+ the task's data); else refused, so that model B's evaluation never reports model A's metrics."""
    for name, path in tasks.items():
        from verl_ext.evaluation.tasks import METRICS

        if not (Path(out_dir) / name / METRICS).is_file():
            continue  # not finished: evaluate_tasks runs it
        stored, current = _run(Path(out_dir) / name), {**run, "data": path}
        # keys an older evaluation did not record are not compared, except the model and the data
        keys = [k for k in CACHE_KEYS if k in stored or k in ("model", "data")]
        differ = [k for k in keys if not _same(k, stored.get(k), current.get(k))]
        if differ:
            shown = ", ".join(f"{k} {stored.get(k)!r} vs {current.get(k)!r}" for k in differ)
            raise ValueError(
                f"{Path(out_dir) / name} holds an evaluation of another run ({shown}); give each model its own --out "
                "folder, or delete that folder to re-evaluate"
            )


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
            check_task_files(tasks)
            info = {
                "model": str(Path(args.model).resolve()),
                "backend": args.backend,
                "seed": args.seed,
                "max_new_tokens": args.max_new_tokens,
            }
            check_cached(tasks, args.out, {**info, "limit": args.limit})
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
