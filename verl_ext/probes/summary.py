"""The probe tables: every encoder with its paired bootstrap interval, the random-encoder floor as mean ± std over
seeds, the trivial colour rows, and DPO − SFT (and each model − the colour row) with paired intervals.

Intervals (`verl_ext.stats.paired_cluster_bootstrap`, 95 %, 2,000 resamples): the test images are resampled (a
mirrored copy with its source) for a classification probe, whole 4 x 4-tile spatial blocks for the segmentation
probe; every row is scored on the same draw, so a difference's interval is paired. Only the last block is
intervalled (the number the tables and the study report quote).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from verl_ext import stats
from verl_ext.probes.plots import FLOOR
from verl_ext.probes.trivial import LINEAR_ROWS, SEGMENTATION_ROW, TRIVIAL_ROWS

NOT_ROWS = ("weights", "gradmap", "run", "floor", "intervals")
SEGMENTATION_TASK = "s2-segmentation"


def rows_of(results: dict[str, Any]) -> list[str]:
    """Every table row: random seeds, then the trivial rows, then the models, in the results' order."""
    names = [m for m in results if m not in NOT_ROWS]
    return sorted(names, key=lambda m: 0 if m.startswith(FLOOR) else 1 if m in TRIVIAL_ROWS else 2)


def entry(results: dict[str, Any], row: str, task: str) -> dict[str, Any] | None:
    """The probe entry of a row on a task (`s2-segmentation` for the segmentation probe)."""
    r = results.get(row) or {}
    return r.get("segmentation") if task == SEGMENTATION_TASK else (r.get("linear") or {}).get(task)


def last_test(probe: dict[str, Any]) -> float:
    blocks = probe["blocks"]
    return blocks[max(blocks, key=lambda b: int(b))]["test"]


def tasks_of(results: dict[str, Any]) -> list[str]:
    seen: list[str] = []
    for row in rows_of(results):
        for task in results[row].get("linear") or {}:
            if task not in seen:
                seen.append(task)
    if any(results[r].get("segmentation") for r in rows_of(results)):
        seen.append(SEGMENTATION_TASK)
    return seen


def floor_summary(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{task: {"mean", "std", "seeds", "values"}} of the random encoders' last-block test scores."""
    out = {}
    seeds = [r for r in rows_of(results) if r.startswith(FLOOR)]
    for task in tasks_of(results):
        values = [last_test(e) for r in seeds if (e := entry(results, r, task))]
        if values:
            mean, std = stats.mean_std(values)
            out[task] = {"mean": mean, "std": std, "seeds": len(values), "values": values}
    return out


def interval_pairs(rows: list[str], task: str) -> list[tuple[str, str]]:
    """DPO − SFT, and each model − the strongest trivial row of the task's kind."""
    trivial = SEGMENTATION_ROW if task == SEGMENTATION_TASK else LINEAR_ROWS[-1]
    models = [r for r in rows if not r.startswith(FLOOR) and r not in TRIVIAL_ROWS]
    pairs = [("sft", "dpo")] if {"sft", "dpo"} <= set(rows) else []
    return pairs + [(trivial, m) for m in models if trivial in rows]


def probe_intervals(results: dict[str, Any], seed: int = 0) -> dict[str, dict[str, Any]]:
    """{task: paired_cluster_bootstrap output} over every row with last-block test predictions."""
    out = {}
    for task in tasks_of(results):
        entries = {r: e for r in rows_of(results) if (e := entry(results, r, task)) and "test_pred" in e}
        ref = next((e for e in entries.values() if "test_true" in e), None)
        if ref is None:
            continue
        true, units = np.asarray(ref["test_true"]), np.asarray(ref["test_units"])
        if task == SEGMENTATION_TASK:
            k = int(max(true.max(), *(max(e["test_pred"]) for e in entries.values()))) + 1
            parts = {r: stats.confusion_parts(true, e["test_pred"], k) for r, e in entries.items()}
            statistic = stats.miou_statistic
        else:
            parts = {r: stats.correct_parts(true, e["test_pred"]) for r, e in entries.items()}
            statistic = stats.accuracy_statistic
        pairs = interval_pairs(list(entries), task)
        out[task] = stats.paired_cluster_bootstrap(parts, units, statistic, pairs, seed=seed)
    return out


def _num(x: Any) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _ci(stat: dict[str, Any] | None) -> str:
    if not stat:
        return "—"
    return f"{stat['value']:.3f} [{stat['ci_low']:.3f}, {stat['ci_high']:.3f}]"


def _diff(stat: dict[str, Any] | None) -> str:
    if not stat:
        return "—"
    verdict = {1: "above", -1: "below", 0: "not resolved"}[stats.separation(stat["ci_low"], stat["ci_high"])]
    return f"{stat['value']:+.3f} [{stat['ci_low']:+.3f}, {stat['ci_high']:+.3f}] ({verdict})"


def markdown(results: dict[str, Any]) -> str:
    """probes.md: per task, every row's last-block test score with its interval; the floor as mean ± std."""
    lines = ["# Encoder probes", ""]
    lines += [
        "Test score of the last vision block (C chosen on val), 95 % paired bootstrap interval (resampling images; "
        "spatial blocks for segmentation). `random` rows: the base architecture with random weights (the floor), "
        "summarised as mean ± std over seeds; `colour …` rows: no encoder at all (`verl_ext/probes/trivial.py`).",
        "",
    ]
    intervals, floor = results.get("intervals") or {}, results.get("floor") or {}
    for task in tasks_of(results):
        metric = "mIoU" if task == SEGMENTATION_TASK else "accuracy"
        ci = intervals.get(task) or {}
        lines += [f"## {task} ({metric})", "", "| row | last block [95 % CI] | best block on val |", "|---|---|---|"]
        for row in rows_of(results):
            e = entry(results, row, task)
            if not e:
                continue
            best = max(e["blocks"], key=lambda b: e["blocks"][b]["val"])
            best_text = "—" if row in TRIVIAL_ROWS else f"{_num(e['blocks'][best]['test'])} [block {best}]"
            lines.append(f"| {row} | {_ci(ci.get(row)) if row in ci else _num(last_test(e))} | {best_text} |")
        if task in floor:
            f = floor[task]
            lines.append(f"| random floor, mean ± std over {f['seeds']} seeds | {f['mean']:.3f} ± {f['std']:.3f} | |")
        first = next((entry(results, r, task) for r in rows_of(results) if entry(results, r, task)), None)
        if first and "majority" in first:
            lines.append(f"| majority class | {first['majority']:.3f} | |")
        diffs = [(k, v) for k, v in ci.items() if "-" in k and k not in results]
        if diffs:
            lines += ["", "| difference (b − a) | value [95 % CI] |", "|---|---|"]
            lines += [f"| {k.replace('-', ' − ', 1)} | {_diff(v)} |" for k, v in diffs]
        lines.append("")
    if results.get("weights"):
        lines += ["## relative weight change of the vision encoder vs the base", ""]
        for m, change in results["weights"].items():
            blocks = [v for k, v in change.items() if k.startswith("block_")]
            mean = sum(blocks) / max(1, len(blocks))
            lines.append(f"- {m}: mean over blocks {mean:.3g}; merger {change.get('merger', float('nan')):.3g}")
        lines.append("")
    return "\n".join(lines) + "\n"
