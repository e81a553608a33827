"""Per-image held-out numbers of one evaluation and paired intervals between two arms (bench/bench_effect.py, the demo).

Every RL run of the bench is evaluated on the same held-out tiles, and runs of the same seed share the data order and
the rollout seeds, so an arm (e.g. `dc_ans`) and GRPO are compared item by item: an item is one (seed, image) pair,
and the resampled unit is the image (its items over seeds are not independent: an image hard for one run is hard for
every run). The interval is `verl_ext.stats.paired_cluster_bootstrap`'s percentile bootstrap over images, both arms
drawn with the same resample.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from verl_ext.evaluation.metrics import js_divergence
from verl_ext.stats import ALPHA, N_BOOT, accuracy_statistic, bootstrap_weights, cluster_sums, paired_cluster_bootstrap

IDENTITY = "identity"
# the per-image numbers (each the image's value; the evaluation's summary is their mean over images)
IMAGE_METRICS = ("js", "agreement", "accuracy", "accuracy_transformed")


def read_predictions(path: str | Path) -> list[dict]:
    """The evaluation CLI's `predictions.jsonl` (one JSON record per (row, view)); plain JSON, nothing executed."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def image_values(records: Iterable[Mapping]) -> dict[int, dict[str, float]]:
    """Per held-out image (the record's `index`): its numbers over the transformed views.

    Args:
        records: `predictions.jsonl` records: `index`, `view`, `label`, `prediction` (None: no valid answer),
            `answer_distribution` ({class: probability}, same classes on every view of a row).

    Returns:
        {index: {"js": mean over transforms of JS(original ‖ view) in bits, "agreement": share of transforms with
        the same valid answer as the original view, "accuracy": 1/0 on the original view, "accuracy_transformed":
        share of transforms answered correctly}}. The mean over images of each equals the evaluation's
        `invariance.mean_js` / `mean_agreement` / `accuracy` / `mean_accuracy_transformed` when every image has
        every view (the evaluation averages per view first; equal counts make the two means the same).

    Raises:
        ValueError: an image without its original view or without any transformed view.
    """
    by_image: dict[int, dict[str, Mapping]] = {}
    for rec in records:
        by_image.setdefault(int(rec["index"]), {})[str(rec["view"])] = rec
    out = {}
    for index, views in sorted(by_image.items()):
        original = views.get(IDENTITY)
        others = [v for name, v in views.items() if name != IDENTITY]
        if original is None or not others:
            raise ValueError(f"image {index}: needs the identity view and at least one transform, got {sorted(views)}")
        classes = list(original["answer_distribution"])
        p = np.array([original["answer_distribution"][c] for c in classes])  # [C]
        js = [js_divergence(p, np.array([v["answer_distribution"][c] for c in classes])) for v in others]
        pred0 = original["prediction"]
        out[index] = {
            "js": float(np.mean(js)),
            "agreement": float(np.mean([pred0 is not None and v["prediction"] == pred0 for v in others])),
            "accuracy": float(original["prediction"] == original["label"]),
            "accuracy_transformed": float(np.mean([v["prediction"] == v["label"] for v in others])),
        }
    return out


def paired_items(
    base: Mapping[int, Mapping[int, Mapping[str, float]]],
    arm: Mapping[int, Mapping[int, Mapping[str, float]]],
    metric: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (seed, image) items both arms have: (`[N]` base values, `[N]` arm values, `[N]` image ids).

    Args:
        base, arm: {seed: {image: {metric: value}}} (`image_values` of each seed's run).
        metric: one of `IMAGE_METRICS`.
    """
    keys = [(s, i) for s in sorted(base) if s in arm for i in sorted(base[s]) if i in arm[s]]
    a = np.array([base[s][i][metric] for s, i in keys], dtype=np.float64)  # [N]
    b = np.array([arm[s][i][metric] for s, i in keys], dtype=np.float64)  # [N]
    return a, b, np.array([i for _, i in keys], dtype=np.int64)


def paired_comparison(
    base: Mapping[int, Mapping[int, Mapping[str, float]]],
    arm: Mapping[int, Mapping[int, Mapping[str, float]]],
    metric: str,
    n_boot: int = N_BOOT,
    seed: int = 0,
    alpha: float = ALPHA,
) -> dict[str, float]:
    """arm − base and arm / base of the mean over paired (seed, image) items, with percentile intervals from one
    bootstrap over images (clusters), both arms drawn alike.

    Returns:
        {"base", "arm": the means; "delta", "delta_low", "delta_high"; "ratio", "ratio_low", "ratio_high" (NaN when
        the base mean is 0); "n_items", "n_images"}.

    Note:
        Resampling images (not seeds) conditions on the trained runs: the interval says whether the difference
        holds across held-out images for these seeds; the seed-to-seed spread is reported beside it (`per_seed_delta`).
    """
    a, b, groups = paired_items(base, arm, metric)
    if a.size == 0:
        raise ValueError(f"{metric}: the two arms share no (seed, image) item")
    ones = np.ones_like(a)
    parts = {"base": np.stack([a, ones], -1), "arm": np.stack([b, ones], -1)}  # [N, 2] (value, count)
    res = paired_cluster_bootstrap(parts, groups, accuracy_statistic, [("base", "arm")], n_boot, seed, alpha)
    # the ratio with the same draws (bootstrap_weights is seeded: paired_cluster_bootstrap drew exactly these)
    sums_a, _ = cluster_sums(a, groups)  # [C]
    sums_b, _ = cluster_sums(b, groups)  # [C]
    weights = bootstrap_weights(len(sums_a), n_boot, seed)  # [B, C]
    with np.errstate(divide="ignore", invalid="ignore"):
        boot_ratio = (weights @ sums_b) / (weights @ sums_a)  # [B]; the counts cancel
        ratio = float(sums_b.sum() / sums_a.sum()) if sums_a.sum() != 0 else float("nan")
    finite = boot_ratio[np.isfinite(boot_ratio)]
    lo, hi = np.quantile(finite, [alpha / 2, 1 - alpha / 2]) if finite.size else (float("nan"),) * 2
    diff = res["arm-base"]
    return {
        "base": res["base"]["value"],
        "arm": res["arm"]["value"],
        "delta": diff["value"],
        "delta_low": diff["ci_low"],
        "delta_high": diff["ci_high"],
        "ratio": ratio,
        "ratio_low": float(lo),
        "ratio_high": float(hi),
        "n_items": int(a.size),
        "n_images": int(diff["n_clusters"]),
    }


def per_seed_delta(
    base: Mapping[int, Mapping[int, Mapping[str, float]]],
    arm: Mapping[int, Mapping[int, Mapping[str, float]]],
    metric: str,
) -> dict[int, float]:
    """{seed: mean over the seed's shared images of arm − base} (the seed-to-seed spread of the difference)."""
    out = {}
    for s in sorted(base):
        if s not in arm:
            continue
        a, b, _ = paired_items({s: base[s]}, {s: arm[s]}, metric)
        if a.size:
            out[s] = float(np.mean(b - a))
    return out
