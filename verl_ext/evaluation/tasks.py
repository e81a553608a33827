"""Evaluate one model on a list of tasks with one backend load: prior tasks (classification / VQA / multiple choice,
scored like `python -m verl_ext.evaluation`) and the jigsaw task (exact and hit rate, `verl_ext.jigsaw`).

    python -m verl_ext.evaluation.forgetting evaluate --model DIR --tasks s2=data/s2/test.parquet,\\
        easy_vqa=data/easy_vqa/test.parquet,jigsaw=data/jigsaw3/test.parquet --out runs/base/eval

Each task writes `<out>/<task>/metrics.json` (last, atomically: a task with one is finished and skipped on a rerun)
and `predictions.jsonl`. Classification tasks get exactly the evaluation CLI's metrics (accuracy, valid rate,
teacher-forced answer distributions over the row's vocabulary); jigsaw rows get `exact`, `hit`, `valid_rate`,
`format_rate` and the mean reward (`verl_ext.jigsaw.compute_score`, paper weights).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from verl_ext.evaluation import runner
from verl_ext.evaluation.backends import EvalBackend, generate_in_batches
from verl_ext.evaluation.grounding import PREFIX as GROUNDING_PREFIX
from verl_ext.evaluation.grounding import evaluate_grounding
from verl_ext.jigsaw import compute_score as jigsaw_score

JIGSAW_PREFIX = "jigsaw_"
METRICS, PREDICTIONS = "metrics.json", "predictions.jsonl"


def parse_tasks(text: str | Sequence[str]) -> dict[str, str]:
    """ "name=path,name=path" (or a list of "name=path") -> {name: path}; names must be unique."""
    items = text.split(",") if isinstance(text, str) else list(text)
    tasks: dict[str, str] = {}
    for item in (i.strip() for i in items):
        if not item:
            continue
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ValueError(f"task {item!r}: write name=path (e.g. easy_vqa=data/easy_vqa/test.parquet)")
        if name.strip() in tasks:
            raise ValueError(f"task name {name.strip()!r} given twice")
        tasks[name.strip()] = path.strip()
    if not tasks:
        raise ValueError("no tasks given")
    return tasks


def task_kind(path: str | Path) -> str:
    """ "jigsaw" if the parquet's rows are jigsaw puzzles (data_source jigsaw_<n>x<n>), else "classification"."""
    import pyarrow.parquet as pq

    sources = set(pq.read_table(path, columns=["data_source"]).column("data_source").to_pylist())
    if sources and all(str(s).startswith(GROUNDING_PREFIX) for s in sources):  # verl_ext/evaluation/grounding.py
        return "grounding"
    jigsaw = {str(s).startswith(JIGSAW_PREFIX) for s in sources}
    if len(jigsaw) > 1:
        raise ValueError(f"{path} mixes jigsaw and other rows; give them as separate tasks")
    return "jigsaw" if jigsaw == {True} else "classification"


def evaluate_jigsaw(
    rows: Sequence[runner.Row], backend: EvalBackend, batch_size: int, progress: Callable[[int], None] | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Greedy answers to jigsaw rows scored by the reward: (metrics, per-row records)."""
    responses = generate_in_batches(rows, backend, batch_size, progress)
    records = []
    for row, response in zip(rows, responses):
        parts = jigsaw_score("", response, row.label)
        records.append({"index": row.index, "label": row.label, "response": response, **parts})
    n = len(records)

    def mean(key: str) -> float:
        return sum(r[key] for r in records) / n if n else float("nan")

    metrics = {
        "kind": "jigsaw",
        "n": n,
        "exact": mean("acc"),
        "hit": mean("hit"),
        "valid_rate": mean("answer_valid"),
        "format_rate": mean("format"),
        "mean_reward": mean("score"),
    }
    return metrics, records


def evaluate_classification(
    rows: Sequence[runner.Row], backend: EvalBackend, batch_size: int, progress: Callable[[int], None] | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The evaluation CLI's metrics on the original view only, with the teacher-forced answer distributions."""
    outputs = runner.run_views(rows, backend, [], batch_size, distributions=True, progress=progress)
    metrics, records = runner.evaluate(rows, outputs)
    return {"kind": "classification", **metrics}, records


def evaluate_tasks(
    backend: EvalBackend,
    tasks: Mapping[str, str],
    out_dir: str | Path,
    batch_size: int = 8,
    limit: int | None = None,
    run_info: Mapping[str, Any] | None = None,
    echo: Callable[[str], None] = print,
    show_progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Evaluate `backend` on every task; finished tasks (metrics.json present) are read back, not rerun.

    Returns:
        {task: metrics}.
    """
    from tqdm import tqdm

    results: dict[str, dict[str, Any]] = {}
    for name, path in tasks.items():
        task_dir = Path(out_dir) / name
        if (task_dir / METRICS).exists():
            results[name] = json.loads((task_dir / METRICS).read_text())
            echo(f"[{name}] done before: {task_dir / METRICS}")
            continue
        rows = runner.load_rows(path, limit)
        if not rows:
            raise ValueError(f"task {name}: no rows in {path}")
        kind = task_kind(path)
        start = time.time()
        total = len(rows) * (1 if kind == "jigsaw" else 2)
        with tqdm(total=total, desc=f"evaluate {name}", disable=not show_progress) as bar:
            evaluate = {"jigsaw": evaluate_jigsaw, "grounding": evaluate_grounding}.get(kind, evaluate_classification)
            metrics, records = evaluate(rows, backend, batch_size, progress=bar.update)
        metrics["run"] = {**(run_info or {}), "task": name, "data": str(path), "limit": limit}
        metrics["run"]["seconds"] = round(time.time() - start, 2)
        text = "".join(json.dumps(runner.nan_to_none(r)) + "\n" for r in records)
        runner.write_text_atomic(task_dir / PREDICTIONS, text)
        runner.write_json_atomic(task_dir / METRICS, metrics)
        headline = "exact" if kind == "jigsaw" else "accuracy"  # grounding: Acc@0.5
        echo(f"[{name}] {headline} {metrics[headline]:.4f} on {metrics['n']} rows -> {task_dir / METRICS}")
        results[name] = metrics
    return results


def read_predictions(task_dir: str | Path) -> list[dict[str, Any]]:
    """The original-view records of a task's predictions.jsonl."""
    lines = (Path(task_dir) / PREDICTIONS).read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("view", runner.IDENTITY) == runner.IDENTITY]
