"""PNG plots of an evaluation (matplotlib, Agg backend, written atomically)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure_atomic(fig: Any, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save `fig` as PNG to a temporary sibling, rename it to `path`, and close the figure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
        pyplot().close(fig)
    return path


def plot_confusion(matrix: Sequence[Sequence[int]], rows: Sequence[str], columns: Sequence[str], path: str) -> Path:
    """Heat map of a confusion matrix, rows normalised to fractions of the true class (counts written when small).

    Args:
        matrix: (K, K+1) counts, rows = true classes, columns = predictions (+ the invalid column).
        rows: K row names.
        columns: K+1 column names.
        path: PNG path.
    """
    plt = pyplot()
    counts = np.asarray(matrix, dtype=np.float64).reshape(len(rows), len(columns))
    totals = counts.sum(axis=1, keepdims=True)
    frac = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    size = max(4.0, 0.35 * len(columns) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(frac, vmin=0.0, vmax=1.0, cmap="Blues")
    ax.set_xticks(range(len(columns)), labels=list(columns), rotation=90, fontsize=7)
    ax.set_yticks(range(len(rows)), labels=list(rows), fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(rows) <= 25:
        for (i, j), value in np.ndenumerate(counts):
            if value:
                color = "white" if frac[i, j] > 0.5 else "black"
                ax.text(j, i, f"{int(value)}", ha="center", va="center", fontsize=6, color=color)
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of true class")
    ax.set_title("confusion (original view)")
    return save_figure_atomic(fig, path)


def plot_view_accuracy(views: dict[str, dict[str, Any]], path: str) -> Path:
    """Bars of accuracy per view, with the agreement with the original view beside each transform.

    Args:
        views: metrics.json's "views": {view: {"accuracy", "agreement_with_original"?, ...}}.
        path: PNG path.
    """
    plt = pyplot()
    names = list(views)
    acc = [_num(views[v].get("accuracy")) for v in names]
    agree = [_num(views[v].get("agreement_with_original")) for v in names]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(names) + 1), 3.5))
    ax.bar(x - 0.2, acc, width=0.4, label="accuracy")
    ax.bar(x + 0.2, agree, width=0.4, label="agreement with original")
    ax.set_xticks(x, labels=names)
    ax.set_ylim(0, 1)
    ax.set_ylabel("fraction")
    ax.legend(fontsize=8)
    ax.set_title("accuracy per view")
    return save_figure_atomic(fig, path)


def _num(value: Any) -> float:
    """A bar height: 0.0 for a missing (None/NaN) value."""
    return 0.0 if value is None or value != value else float(value)
