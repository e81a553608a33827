"""The novel-task report's pictures (matplotlib, Agg, atomic writes), from `recipe.novel_task.report.collect`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from verl_ext.evaluation.plots import pyplot, save_figure_atomic


def plot_reward_per_step(results: Mapping[str, Any], path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for row in results["methods"].values():
        if row["curve"]:
            xs, ys = zip(*row["curve"])
            ax.plot(xs, ys, marker="o", label=f"{row['label']} (jigsaw test)")
        if row["train_reward"]:
            xs, ys = zip(*row["train_reward"])
            label = f"{row['label']} (training rollouts, {results['reward']['train']['function']})"
            ax.plot(xs, ys, linestyle="--", alpha=0.7, label=label)
    ax.set_xlabel("training step")
    reward = results["reward"]
    ax.set_ylabel(f"mean reward (test max {reward['test']['max']:g}; training max {reward['train']['max']:g})")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
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
    if ax.get_legend_handles_labels()[0]:
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


def plot_learning_curves(results: Mapping[str, Any], path: Path) -> Path:
    """One panel per task (the new task's exact rate, each prior task's accuracy), one line per arm over the steps of
    its evaluated checkpoints (`methods.<arm>.checkpoints` {step: eval dir}): "SFT learns fast, GRPO slowly"."""
    plt = pyplot()
    methods = results["methods"]
    tasks = [results["new_task"]] + [t for t in results["prior_tasks"]]
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.4 * len(tasks), 3.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for row in methods.values():
            points = row["exact_curve"] if task == results["new_task"] else row["prior_curves"].get(task, [])
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, [100 * y for y in ys], marker="o", label=row["label"])
        ax.set_title(f"{task} ({'exact' if task == results['new_task'] else 'accuracy'}, %)", fontsize=8)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    if axes[0][0].get_legend_handles_labels()[0]:
        axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return save_figure_atomic(fig, path)
