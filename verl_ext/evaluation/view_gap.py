"""The invariance gap of one evaluation: accuracy on the original view minus accuracy on the transformed views, per
view and pooled, with percentile intervals from one image-level bootstrap (issue 19, point 7; the digits demo and
`bench/bench_invariance_gap.py`).

Input is the evaluation CLI's `predictions.jsonl` (`python -m verl_ext.evaluation`): one record per (row, view).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from verl_ext.stats import accuracy_statistic, paired_cluster_bootstrap

IDENTITY = "identity"


def correct_by_view(predictions: str | Path) -> tuple[list[int], dict[str, np.ndarray]]:
    """From the evaluation CLI's predictions.jsonl: (image indices, {view: `[N]` 1.0/0.0 correct}) on the images
    every view evaluated, in index order (an image some view lacks is left out of every view)."""
    table: dict[str, dict[int, float]] = {}
    for line in Path(predictions).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        table.setdefault(rec["view"], {})[int(rec["index"])] = float(rec["prediction"] == rec["label"])
    if not table:
        raise ValueError(f"{predictions}: no predictions")
    common = sorted(set.intersection(*(set(v) for v in table.values())))
    return common, {view: np.array([vals[i] for i in common]) for view, vals in table.items()}  # {view: [N]}


def gap_statistics(correct: dict[str, np.ndarray], seed: int = 0) -> dict[str, dict[str, float]]:
    """Accuracy per view and the paired gaps, with percentile intervals from one image-level bootstrap.

    Args:
        correct: {view: `[N]` 1/0 correct on the same N images}; must hold "identity" and at least one other view.
        seed: the bootstrap's seed.

    Returns:
        {view: {...}, "transformed": {...} (all non-identity views pooled, each image weighing the same),
        "identity-<view>" and "identity-transformed": original minus the view (the gap; > 0: the view is worse)},
        each {"value", "ci_low", "ci_high", "n_items", "n_clusters"}.

    Note:
        `paired_cluster_bootstrap` reports b − a for a pair (a, b); the gap is original − transformed, so the pair is
        (view, identity). The pooled arm's parts per image are (correct views, number of views), so its accuracy is
        the mean over views and images and the interval still resamples images.
    """
    views = [v for v in correct if v != IDENTITY]
    if IDENTITY not in correct or not views:
        raise ValueError(f"gap_statistics needs the identity view and another; got {sorted(correct)}")
    parts = {v: np.stack([c, np.ones_like(c)], axis=-1) for v, c in correct.items()}  # {view: [N, 2]}
    stacked = np.stack([correct[v] for v in views], axis=0)  # [V, N]
    parts["transformed"] = np.stack([stacked.sum(0), np.full(stacked.shape[1], float(len(views)))], axis=-1)  # [N, 2]
    groups = np.arange(len(correct[IDENTITY]))  # [N] one cluster per image
    pairs = [(v, IDENTITY) for v in [*views, "transformed"]]
    return paired_cluster_bootstrap(parts, groups, accuracy_statistic, pairs, seed=seed)


def gap_record(predictions: str | Path, seed: int = 0) -> dict:
    """One evaluation's gap numbers: the images, per-image correctness (original, share of transformed views right),
    accuracy per view, the pooled transformed accuracy and the gap (overall and per view), each with its interval."""
    images, correct = correct_by_view(predictions)
    stats = gap_statistics(correct, seed=seed)
    transformed = np.mean([c for v, c in correct.items() if v != IDENTITY], axis=0)  # [N] share of views right
    return {
        "n_images": len(images),
        "images": images,
        "per_image_original": correct[IDENTITY].tolist(),
        "per_image_transformed": transformed.tolist(),
        "accuracy": {v: stats[v]["value"] for v in correct},
        "transformed": stats["transformed"],
        "gap": stats["identity-transformed"],
        "gap_by_view": {v: stats[f"identity-{v}"] for v in correct if v != IDENTITY},
    }
