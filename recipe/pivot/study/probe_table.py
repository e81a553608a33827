"""The study report's probe table: every encoder with its 95 % paired bootstrap interval, the random floor as mean ±
std over seeds, the colour row (no encoder), DPO − SFT with its interval, per training seed and over seeds.

Reads the `probes.json` of `python -m verl_ext.probes` (its `intervals` and `floor` entries, `verl_ext/probes/
summary.py`). With several training seeds, `{out}/seed_<k>/probes/probes.json` (one per seed; the runner's layout
for `vars.train_seeds`) are read as well as `{out}/probes/probes.json`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from verl_ext import stats

DASH = "—"
COLOUR_ROW = {"linear": "colour mean+std", "segmentation": "patch colour"}
SEGMENTATION_TASK = "s2-segmentation"
HEAD = "| probe | colour row (no encoder) | random (floor), mean ± std | base | SFT | DPO | DPO − SFT [95 % CI] |"


def probe_files(out: Path) -> dict[str, Path]:
    """{training seed label: probes.json} found under the study folder."""
    found = {}
    if (out / "probes" / "probes.json").exists():
        found["0"] = out / "probes" / "probes.json"
    for path in sorted(out.glob("seed_*/probes/probes.json")):
        found[path.parent.parent.name.removeprefix("seed_")] = path
    return found


def _ci(stat: Mapping[str, Any] | None, signed: bool = False) -> str:
    if not stat:
        return DASH
    f = "{:+.3f}" if signed else "{:.3f}"
    return f"{f.format(stat['value'])} [{f.format(stat['ci_low'])}, {f.format(stat['ci_high'])}]"


def _tasks(probes: Mapping[str, Any]) -> list[str]:
    base = probes.get("base") or {}
    return list(base.get("linear") or {}) + ([SEGMENTATION_TASK] if base.get("segmentation") else [])


def probe_lines(runs: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """Markdown lines of the probe table and the differences whose interval excludes 0 (for the first line).

    Args:
        runs: {training seed: probes.json content}.
    """
    if not runs:
        return [], []
    first_seed, first = next(iter(runs.items()))
    tasks = _tasks(first)
    head = HEAD
    lines = [
        f"## Encoder probes (test split, last vision block; 95 % paired bootstrap CI; training seed {first_seed})",
        "",
        "Resampled units: test images (classification), 4 x 4-tile spatial blocks (segmentation). A model is said to "
        "beat colour or SFT only where the paired interval of the difference excludes 0.",
        "",
        head,
        "|---" * 7 + "|",
    ]
    significant = []
    for task in tasks:
        ci = (first.get("intervals") or {}).get(task) or {}
        kind = "segmentation" if task == SEGMENTATION_TASK else "linear"
        floor = (first.get("floor") or {}).get(task)
        floor_text = f"{floor['mean']:.3f} ± {floor['std']:.3f} ({floor['seeds']} seeds)" if floor else DASH
        cells = [_ci(ci.get(COLOUR_ROW[kind])), floor_text] + [_ci(ci.get(m)) for m in ("base", "sft", "dpo")]
        lines.append(f"| {task} | " + " | ".join(cells) + f" | {_ci(ci.get('dpo-sft'), signed=True)} |")
        for key, stat in ci.items():
            if "-" in key and stats.separation(stat["ci_low"], stat["ci_high"]):
                b, a = key.split("-", 1)
                significant.append(
                    f"{task}: {b} − {a} {_ci(stat, signed=True)} (n = {stat['n_items']} test items in "
                    f"{stat['n_clusters']} units, training seed {first_seed})"
                )
    lines.append("")
    if len(runs) > 1:
        lines += seed_lines(runs, tasks)
    return lines, significant


def seed_lines(runs: Mapping[str, Mapping[str, Any]], tasks: list[str]) -> list[str]:
    """DPO − SFT per training seed and its mean ± std over seeds."""
    lines = ["### DPO − SFT per training seed (last block)", "", "| probe | " + " | ".join(f"seed {s}" for s in runs)]
    lines[-1] += " | mean ± std over seeds |"
    lines.append("|---" * (len(runs) + 2) + "|")
    for task in tasks:
        stats_by_seed = [((r.get("intervals") or {}).get(task) or {}).get("dpo-sft") for r in runs.values()]
        values = [s["value"] for s in stats_by_seed if s]
        mean, std = stats.mean_std(values)
        summary = f"{mean:+.3f} ± {std:.3f} (n = {len(values)})" if values else DASH
        lines.append(f"| {task} | " + " | ".join(_ci(s, signed=True) for s in stats_by_seed) + f" | {summary} |")
    return lines + [""]


def planned_probe_lines(tasks: list[str], seeds: list[Any]) -> list[str]:
    """The table's skeleton for a dry run: every row and column, every number a dash."""
    lines = ["## Encoder probes (planned)", "", f"Training seeds {', '.join(str(s) for s in seeds)}.", ""]
    lines += [
        "| probe | colour row (no encoder) | random (floor), mean ± std | base | SFT | DPO | DPO − SFT [95 % CI] |"
    ]
    lines += ["|---" * 7 + "|"] + [f"| {t} |" + f" {DASH} |" * 6 for t in tasks]
    return lines + [""]


def load_runs(out: Path) -> dict[str, dict[str, Any]]:
    return {seed: json.loads(path.read_text()) for seed, path in probe_files(out).items()}
