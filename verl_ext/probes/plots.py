"""PNGs of the probes (matplotlib, Agg, atomic writes through `verl_ext.evaluation.plots.save_figure_atomic`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from verl_ext.evaluation.plots import pyplot, save_figure_atomic

FLOOR = "random"


def plot_per_block(
    results: dict[str, dict[str, Any]], key: str, ylabel: str, title: str, path: str | Path, chance: float | None = None
) -> Path:
    """One line per model over the blocks (`results[model][key]["blocks"][block]["test"]`); the random-encoder floor
    dashed, the chance level dotted."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for model, res in results.items():
        blocks = res[key]["blocks"]
        xs = sorted(int(b) for b in blocks)
        ys = [blocks[b if b in blocks else str(b)]["test"] for b in xs]
        floor = model.startswith(FLOOR)
        style = {"linestyle": "--", "color": "grey", "alpha": 0.6} if floor else {"marker": "o"}
        ax.plot(xs, ys, label=model + (" (floor)" if floor else ""), **style)
    if chance is not None:
        ax.axhline(chance, linestyle=":", color="black", linewidth=1, label="chance / majority")
    ax.set_xlabel("vision block")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure_atomic(fig, path)


def plot_weight_change(changes: dict[str, dict[str, float]], path: str | Path) -> Path:
    """Relative weight change per encoder part (patch embedding, blocks, merger), one bar group per model."""
    plt = pyplot()
    groups = list(next(iter(changes.values())))
    fig, ax = plt.subplots(figsize=(max(6.4, 0.4 * len(groups) * len(changes)), 4.0))
    width = 0.8 / max(1, len(changes))
    for i, (model, change) in enumerate(changes.items()):
        ax.bar(np.arange(len(groups)) + i * width, [change[g] for g in groups], width, label=model)
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, groups, rotation=60, fontsize=7)
    ax.set_ylabel("‖ΔW‖ / ‖W_base‖")
    ax.set_title("vision-encoder weight change vs the base model")
    ax.legend(fontsize=8)
    return save_figure_atomic(fig, path)


def plot_gradmap_grid(maps: dict[str, list[dict[str, Any]]], path: str | Path) -> Path:
    """Rows = images; columns = the image, then per model its gradient-magnitude and Grad-CAM overlays."""
    plt = pyplot()
    models = list(maps)
    rows = len(next(iter(maps.values())))
    cols = 1 + 2 * len(models)
    fig, axes = plt.subplots(rows, cols, figsize=(1.8 * cols, 1.8 * rows), squeeze=False)
    for r in range(rows):
        image = maps[models[0]][r]["image"]
        axes[r][0].imshow(image)
        axes[r][0].set_title("image" if r == 0 else "", fontsize=8)
        for m, model in enumerate(models):
            entry = maps[model][r]
            for k, name in enumerate(("grad", "cam")):
                ax = axes[r][1 + 2 * m + k]
                ax.imshow(image)
                extent = (0, image.shape[1], image.shape[0], 0)
                ax.imshow(entry[name], cmap="jet", alpha=0.5, extent=extent, interpolation="nearest")
                if r == 0:
                    ax.set_title(f"{model}: {'|grad|' if name == 'grad' else 'Grad-CAM'}", fontsize=7)
    for ax in np.ravel(axes):
        ax.set_axis_off()
    fig.tight_layout()
    return save_figure_atomic(fig, path)


def plot_curves(series: dict[str, Sequence[tuple[int, float]]], path: str | Path, title: str) -> Path:
    """One subplot per metric: (step, value) points."""
    plt = pyplot()
    names = list(series)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.0), squeeze=False)
    for ax, name in zip(axes[0], names):
        points = sorted(series[name])
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o")
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure_atomic(fig, path)
