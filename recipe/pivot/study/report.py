"""The study's report: `{out}/report/results.md` and PNGs, from whatever stages have finished.

The first line says what the run is: with `vars.machinery_check` (the CPU spec: a tiny model) it states that the run
checks the machinery and carries no finding, unless a probe difference has a paired interval that excludes zero
(then that difference, with its n and seeds). With `planned=True` (a dry run) the report is the skeleton of every
table, with dashes for the numbers.

Tables: the encoder probes (last block, with 95 % paired bootstrap intervals, the random floor as mean ± std over
seeds, the colour row, DPO − SFT per training seed; `probe_table.py`), the transplanted
models' test accuracy (base / SFT / DPO encoders under identical projector + LLM training) next to the trained models
themselves, the DPO run's last-step metrics, and the paper's reference rows. PNGs: probe accuracy per block with the
floor, segmentation mIoU per block, gradient-map grids (base / SFT / DPO), relative weight change per encoder block
(copied from the probes), DPO curves (from verl's file logger), transplant accuracy.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recipe.common.runs import read_metrics
from recipe.pivot.study.paper import reference_lines
from recipe.pivot.study.probe_table import load_runs, planned_probe_lines, probe_lines
from verl_ext.evaluation.plots import pyplot, save_figure_atomic
from verl_ext.evaluation.runner import write_text_atomic
from verl_ext.probes.plots import plot_curves

DPO_CURVES = ("dpo/loss", "dpo/reward_margin", "dpo/accuracy", "dpo/pairs", "actor/grad_norm")
PROBE_PNGS = ("linear_*.png", "segmentation.png", "gradmaps.png", "weight_change.png")


def _fmt(x: Any) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def eval_lines(out: Path, encoders: list[str]) -> tuple[list[str], dict[str, float]]:
    """Test accuracy of the trained models and of the transplanted (PIVOT) ones."""
    acc: dict[str, float] = {}
    for metrics in sorted((out / "eval").glob("*/metrics.json")):
        acc[metrics.parent.name] = json.loads(metrics.read_text())["accuracy"]
    lines = ["## Test accuracy (generative, verl_ext.evaluation)", ""]
    lines += ["| encoder | the model itself | transplanted: fresh projector, frozen encoder, projector then +LLM |"]
    lines += ["|---|---|---|"]
    for enc in ("base", "sft", "dpo"):
        if enc in encoders or enc in acc:
            lines.append(f"| {enc} | {_fmt(acc.get(enc))} | {_fmt(acc.get(f'pivot_{enc}'))} |")
    return lines + [""], acc


def dpo_lines(metrics: dict[int, dict[str, float]]) -> list[str]:
    if not metrics:
        return []
    last = metrics[max(metrics)]
    keys = [k for k in sorted(last) if k.startswith("dpo/")]
    lines = [f"## DPO run (step {max(metrics)} of {len(metrics)})", "", "| metric | value |", "|---|---|"]
    return lines + [f"| `{k}` | {_fmt(float(last[k]))} |" for k in keys] + [""]


def plot_accuracy(acc: Mapping[str, float], path: Path) -> Path:
    plt = pyplot()
    names = [n for n in ("base", "sft", "dpo", "pivot_base", "pivot_sft", "pivot_dpo") if n in acc]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.bar(names, [acc[n] for n in names], color=["#999" if not n.startswith("pivot") else "#36c" for n in names])
    ax.set_ylabel("test accuracy")
    ax.set_title("trained models and transplanted encoders")
    return save_figure_atomic(fig, path)


MACHINERY_LINE = "**A CPU run on a tiny model: it checks the machinery and carries no finding.**"
PLANNED_TASKS = ["s2-ndvi4", "s2-greener-half", "digits-rot4", "s2-segmentation"]


def first_lines(spec: Mapping[str, Any], significant: list[str]) -> list[str]:
    """The machinery-check statement of a CPU run (or the differences whose interval excludes 0)."""
    if not spec["vars"].get("machinery_check"):
        return []
    if not significant:
        return [MACHINERY_LINE + " No probe difference has a 95 % interval that excludes zero.", ""]
    return [
        "**A CPU run on a tiny model checks the machinery; only these differences have a 95 % interval that "
        "excludes zero:** " + "; ".join(significant) + ".",
        "",
    ]


def write_report(spec: Mapping[str, Any], out: Path, planned: bool = False) -> Path:
    """Write `{out}/report/results.md` (+ PNGs) from the finished stages (`planned`: a dry run's skeleton)."""
    report = out / "report"
    report.mkdir(parents=True, exist_ok=True)
    lines = ["# PIVOT study: DPO vs SFT on the vision encoder", ""]
    v = spec["vars"]
    seeds = v.get("train_seeds") or [v.get("seed", 0)]
    lines += [f"Base model `{v['base']}`; train `{v['train']}`; test `{v['test']}`; training seeds {seeds}.", ""]
    if planned:
        lines += ["*Planned report (dry run): the tables below fill in as the stages finish.*", ""]
    if v.get("note"):
        lines += [f"**Note:** {v['note']}", ""]
    runs = {} if planned else load_runs(out)
    table, significant = probe_lines(runs)
    lines += table or (planned_probe_lines(PLANNED_TASKS, seeds) if planned else [])
    for pattern in PROBE_PNGS:
        for png in (out / "probes").glob(pattern):
            shutil.copy2(png, report / png.name)
    table, acc = eval_lines(out, list(spec.get("encoders") or []))
    lines += table
    if acc:
        plot_accuracy(acc, report / "accuracy.png")
    metrics = read_metrics(out / "dpo" / "metrics.jsonl")
    lines += dpo_lines(metrics)
    series = {k: [(s, float(v[k])) for s, v in metrics.items() if k in v] for k in DPO_CURVES}
    series = {k: v for k, v in series.items() if v}
    if series:
        plot_curves(series, report / "dpo_curves.png", "DPO through verl")
    lines += reference_lines()
    pngs = sorted(p.name for p in report.glob("*.png"))
    lines += ["## Pictures", ""] + [f"![{name}]({name})" for name in pngs] + [""]
    path = report / "results.md"
    write_text_atomic(path, "\n".join(first_lines(spec, significant) + lines))
    return path
