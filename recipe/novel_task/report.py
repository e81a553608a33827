"""The study's markdown table and pictures, from the evaluation folders, forgetting JSONs and the likelihood JSON.

Files written to `out`: report.md, results.json, reward_per_step.png (jigsaw test reward of each method against the
training step: the base model at step 0, each evaluated checkpoint after; GRPO's training reward from verl's log
dashed), prior_delta.png (per prior task, each method's accuracy change with its 95 % paired-bootstrap CI),
new_vs_forgetting.png (new-task exact rate against the mean prior-task change, one point per method).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recipe.common.runs import metric_series
from verl_ext.evaluation.plots import pyplot, save_figure_atomic
from verl_ext.evaluation.runner import write_json_atomic, write_text_atomic

# arXiv 2506.23508, Qwen2.5-VL-7B, change from the base model in points (secondary source: shared/reference).
PAPER_SOURCE = "arXiv 2506.23508, Qwen2.5-VL-7B (secondary source; change from base, points)"
PAPER_DELTAS = {
    "grpo": {"RefCOCO": -0.6, "MMStar": 1.7},
    "sft": {"RefCOCO": -57.2, "MMStar": -62.8},
    "sft_rollouts": {"RefCOCO": -8.6, "MMStar": -2.4},
}
PAPER_BASE_NOTE = "base model ≈ 0 % exact on 3 × 3 puzzles"
PAPER_ORDER = ["grpo", "sft_rollouts", "sft"]  # least to most forgetting, by the paper's numbers
DASH = "–"


def _load(path: str | Path | None) -> Any:
    return json.loads(Path(path).read_text()) if path and Path(path).exists() else None


def _metrics(eval_dir: str | Path | None, task: str) -> dict[str, Any] | None:
    return _load(Path(eval_dir) / task / "metrics.json") if eval_dir else None


def _pct(value: Any, signed: bool = False) -> str:
    if value is None or value != value:
        return DASH
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def _ci(stat: Mapping[str, float] | None) -> str:
    if not stat or stat.get("delta") is None or stat["delta"] != stat["delta"]:
        return DASH
    return f"{100 * stat['delta']:+.1f} [{100 * stat['ci_low']:+.1f}, {100 * stat['ci_high']:+.1f}]"


def collect(report: Mapping[str, Any]) -> dict[str, Any]:
    """Everything the tables and plots show, as plain data (also written to results.json)."""
    new = str(report.get("new_task", "jigsaw"))
    likelihood = (_load(report.get("likelihood")) or {}).get("datasets", {})
    base = _metrics(report.get("base_eval"), new) or {}
    rows, prior_tasks = {}, []
    for name, entry in (report.get("methods") or {}).items():
        forgetting = _load(entry.get("forgetting")) or {}
        prior = {t: v for t, v in forgetting.items() if v.get("kind") == "classification"}
        prior_tasks += [t for t in prior if t not in prior_tasks]
        deltas = [v["accuracy"]["delta"] for v in prior.values() if v["accuracy"]["delta"] is not None]
        data = likelihood.get(str(entry.get("data", name)), {})
        rows[name] = {
            "label": str(entry.get("label", name)),
            "new_task": _metrics(entry.get("eval"), new) or {},
            "prior": prior,
            "mean_prior_delta": sum(deltas) / len(deltas) if deltas else None,
            "train_data_logprob": data.get("mean_token_logprob"),
            "train_data_rows": data.get("n"),
            "curve": _curve(entry, base, new),
            "train_reward": _train_reward(entry),
        }
    return {"new_task": new, "base": base, "methods": rows, "prior_tasks": prior_tasks}


def _curve(entry: Mapping[str, Any], base: Mapping[str, Any], new: str) -> list[tuple[int, float]]:
    """(step, mean jigsaw test reward): the base at 0, then `checkpoints` {step: eval_dir}, then the final eval."""
    points = [(0, base["mean_reward"])] if "mean_reward" in base else []
    evals = {int(k): v for k, v in (entry.get("checkpoints") or {}).items()}
    if entry.get("eval") and entry.get("step") is not None:
        evals[int(entry["step"])] = entry["eval"]
    for step in sorted(evals):
        m = _metrics(evals[step], new)
        if m:
            points.append((step, m["mean_reward"]))
    return points


def _train_reward(entry: Mapping[str, Any]) -> list[tuple[int, float]]:
    """(step, value) of `train_reward_key` in verl's file-logger JSONL `train_log` (GRPO's rollout reward)."""
    path, key = entry.get("train_log"), entry.get("train_reward_key", "critic/score/mean")
    return metric_series(path, key) if path else []


def markdown(results: Mapping[str, Any]) -> str:
    """The report's tables (percentages; Δ with the 95 % paired-bootstrap CI)."""
    tasks, methods, base = results["prior_tasks"], results["methods"], results["base"]
    head = ["method", "new-task exact", "new-task hit", "well-formed"] + [f"Δ {t} [95% CI]" for t in tasks]
    head += ["mean prior Δ", "train-data log-lik/token (base model)"]
    lines = ["# Novel task (jigsaw) vs forgetting", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    base_cells = ["base", _pct(base.get("exact")), _pct(base.get("hit")), _pct(base.get("valid_rate"))]
    lines.append("| " + " | ".join(base_cells + ["0"] * len(tasks) + ["0", DASH]) + " |")
    for row in methods.values():
        new = row["new_task"]
        cells = [row["label"], _pct(new.get("exact")), _pct(new.get("hit")), _pct(new.get("valid_rate"))]
        cells += [_ci((row["prior"].get(t) or {}).get("accuracy")) for t in tasks]
        lp = row["train_data_logprob"]
        cells += [_pct(row["mean_prior_delta"], signed=True), DASH if lp is None else f"{lp:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Per prior task: what changed (Δ well-formed rate, Δ teacher-forced accuracy, JS base→trained)", ""]
    lines += [
        "| method | task | Δ accuracy | Δ well-formed | Δ teacher-forced | JS (bits) | reading |",
        "|---" * 7 + "|",
    ]
    for row in methods.values():
        for t in tasks:
            v = row["prior"].get(t)
            if v:
                js = DASH if v["answer_js"] is None else f"{v['answer_js']:.3f}"
                cells = [row["label"], t, _ci(v["accuracy"]), _ci(v["valid_rate"]), _ci(v["answer_dist_accuracy"])]
                lines.append("| " + " | ".join([*cells, js, v["reading"]]) + " |")
    lines += [
        "",
        f"Reference rows ({PAPER_SOURCE}; {PAPER_BASE_NOTE}):",
        "",
        "| method (paper) | Δ RefCOCO | Δ MMStar |",
    ]
    lines.append("|---|---|---|")
    for name, d in PAPER_DELTAS.items():
        label = methods.get(name, {}).get("label", name)
        lines.append(f"| {label} (paper) | {d['RefCOCO']:+.1f} | {d['MMStar']:+.1f} |")
    ours = [n for n in PAPER_ORDER if n in methods and methods[n]["mean_prior_delta"] is not None]
    if len(ours) >= 2:
        lines += ["", ordering_line({n: methods[n]["mean_prior_delta"] for n in ours})]
    return "\n".join(lines) + "\n"


def ordering_line(mean_deltas: Mapping[str, float]) -> str:
    """Our arms ranked by mean prior Δ (least forgetting first; "=" for a tie) against the paper's order.

    The verdict is "same" only when our means strictly decrease along the paper's order, "tied" when two are equal.
    """
    ranked = sorted(mean_deltas, key=lambda n: -mean_deltas[n])
    text = ranked[0]
    for prev, name in zip(ranked, ranked[1:]):
        text += (" = " if mean_deltas[name] == mean_deltas[prev] else " > ") + name
    paper = [n for n in PAPER_ORDER if n in mean_deltas]
    values = [mean_deltas[n] for n in paper]
    if any(a == b for a, b in zip(values, values[1:])):
        verdict = "tied: no ordering to compare"
    elif all(a > b for a, b in zip(values, values[1:])):
        verdict = "same ordering"
    else:
        verdict = "different ordering"
    return (
        f"Ordering by mean prior Δ (least forgetting first): ours {text}; paper {' > '.join(paper)} -> {verdict}. "
        "Our prior tasks differ from the paper's, so only the ordering is comparable."
    )


def plot_reward_per_step(results: Mapping[str, Any], path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for row in results["methods"].values():
        if row["curve"]:
            xs, ys = zip(*row["curve"])
            ax.plot(xs, ys, marker="o", label=f"{row['label']} (jigsaw test)")
        if row["train_reward"]:
            xs, ys = zip(*row["train_reward"])
            ax.plot(xs, ys, linestyle="--", alpha=0.7, label=f"{row['label']} (training rollouts)")
    ax.set_xlabel("training step")
    ax.set_ylabel("mean jigsaw reward (max 3)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("jigsaw reward per step")
    return save_figure_atomic(fig, path)


def plot_prior_delta(results: Mapping[str, Any], path: Path) -> Path:
    import numpy as np

    plt = pyplot()
    tasks, methods = results["prior_tasks"], list(results["methods"].values())
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(tasks) + 2), 4))
    width = 0.8 / max(1, len(methods))
    for k, row in enumerate(methods):
        stats = [(row["prior"].get(t) or {}).get("accuracy") or {} for t in tasks]
        d = np.array([100 * (s.get("delta") or 0.0) for s in stats])
        lo = np.array([100 * (s.get("ci_low") or 0.0) for s in stats])
        hi = np.array([100 * (s.get("ci_high") or 0.0) for s in stats])
        x = np.arange(len(tasks)) + (k - (len(methods) - 1) / 2) * width
        ax.bar(x, d, width=width, yerr=[d - lo, hi - d], capsize=3, label=row["label"])
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(tasks)), labels=tasks)
    ax.set_ylabel("Δ accuracy vs base (points, 95% CI)")
    ax.legend(fontsize=7)
    ax.set_title("prior-task change after training")
    return save_figure_atomic(fig, path)


def plot_new_vs_forgetting(results: Mapping[str, Any], path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    base = results["base"]
    if "exact" in base:
        ax.scatter([0.0], [100 * base["exact"]], marker="s", color="gray")
        ax.annotate("base", (0.0, 100 * base["exact"]), fontsize=8)
    for row in results["methods"].values():
        if row["mean_prior_delta"] is not None and "exact" in row["new_task"]:
            x, y = 100 * row["mean_prior_delta"], 100 * row["new_task"]["exact"]
            ax.scatter([x], [y])
            ax.annotate(row["label"], (x, y), fontsize=8)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("mean prior-task Δ accuracy (points)")
    ax.set_ylabel("new task: exact (%)")
    ax.grid(alpha=0.3)
    ax.set_title("learning the new task vs forgetting")
    return save_figure_atomic(fig, path)


def write_report(report: Mapping[str, Any]) -> dict[str, Path]:
    """Write every file of the report; returns their paths."""
    out = Path(report["out"])
    results = collect(report)
    paths = {"results": out / "results.json", "table": out / "report.md"}
    write_json_atomic(paths["results"], results)
    write_text_atomic(paths["table"], markdown(results))
    paths["reward_per_step"] = plot_reward_per_step(results, out / "reward_per_step.png")
    paths["prior_delta"] = plot_prior_delta(results, out / "prior_delta.png")
    paths["new_vs_forgetting"] = plot_new_vs_forgetting(results, out / "new_vs_forgetting.png")
    return paths
