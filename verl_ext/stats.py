"""Interval math for the studies' reports: paired, clustered and stratified percentile bootstraps, seed spreads.

Every interval here is a percentile bootstrap (Efron & Tibshirani 1993, ch. 13): resample the *units* that are
independent (images; spatial blocks of tiles for a segmentation probe; rows per task), recompute the statistic on
each resample, take the alpha/2 and 1 − alpha/2 quantiles. Two arms measured on the same units are resampled with
the SAME draw (paired), so the interval of their difference keeps the pairing.

A resample is a vector of counts `w[c]` (how often unit c was drawn, multinomial(C, 1/C)); any statistic built from
per-unit sums (accuracy = Σ correct / Σ count, mIoU from a summed confusion matrix) is then `w @ parts`: one matmul,
no [B, C, ...] gather.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

N_BOOT, ALPHA = 2000, 0.05


def bootstrap_weights(n_units: int, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """`[n_boot, n_units]` draw counts of a bootstrap with replacement (each row sums to `n_units`), seeded."""
    if n_units <= 0:
        raise ValueError(f"a bootstrap needs at least one unit, got {n_units}")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_units, np.full(n_units, 1.0 / n_units), size=n_boot).astype(np.float64)


def cluster_sums(values: np.ndarray, groups: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster sums of per-item values: (`[C, ...]` sums, `[C]` the cluster ids in sorted order).

    Args:
        values: `[N, ...]` per-item values (e.g. 1/0 correct, or one-hot confusion cells).
        groups: `[N]` cluster id of each item (an image, a spatial block).
    """
    values = np.asarray(values, dtype=np.float64)
    ids, inverse = np.unique(np.asarray(groups), return_inverse=True)
    out = np.zeros((len(ids), *values.shape[1:]), dtype=np.float64)  # [C, ...]
    np.add.at(out, inverse, values)
    return out, ids


def percentile_interval(samples: np.ndarray, alpha: float = ALPHA) -> tuple[float, float]:
    """(low, high) quantiles alpha/2 and 1 − alpha/2 of `[B]` bootstrap samples (NaN samples dropped)."""
    samples = np.asarray(samples, dtype=np.float64)
    samples = samples[~np.isnan(samples)]
    if samples.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(samples, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def accuracy_statistic(sums: np.ndarray) -> np.ndarray:
    """Accuracy from summed (correct, count) parts: `[..., 2]` -> `[...]`."""
    return sums[..., 0] / np.maximum(sums[..., 1], 1e-300)


def miou_statistic(confusion: np.ndarray) -> np.ndarray:
    """Mean IoU over the classes present (in truth or prediction) of summed confusion matrices.

    Args:
        confusion: `[..., K, K]` counts, [true, pred].

    Returns:
        `[...]` mIoU; the same number as `verl_ext.probes.linear.mean_iou` on the items behind the counts.
    """
    inter = np.diagonal(confusion, axis1=-2, axis2=-1)  # [..., K]
    union = confusion.sum(-1) + confusion.sum(-2) - inter  # [..., K] true + pred − both
    present = union > 0
    iou = np.where(present, inter / np.where(present, union, 1.0), 0.0)  # [..., K]
    return iou.sum(-1) / np.maximum(present.sum(-1), 1)


def confusion_parts(true: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """`[N, K, K]` one-hot confusion cell of each item (row = true class, column = predicted)."""
    true, pred = np.asarray(true, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    out = np.zeros((len(true), num_classes, num_classes), dtype=np.float64)
    out[np.arange(len(true)), true, pred] = 1.0
    return out


def correct_parts(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """`[N, 2]` (correct, 1) of each item, the parts of `accuracy_statistic`."""
    correct = (np.asarray(true) == np.asarray(pred)).astype(np.float64)
    return np.stack([correct, np.ones_like(correct)], axis=-1)


def paired_cluster_bootstrap(
    parts: Mapping[str, np.ndarray],
    groups: Sequence[int] | np.ndarray,
    statistic: Callable[[np.ndarray], np.ndarray],
    pairs: Sequence[tuple[str, str]] = (),
    n_boot: int = N_BOOT,
    seed: int = 0,
    alpha: float = ALPHA,
) -> dict[str, dict[str, float]]:
    """Each arm's statistic and each pair's difference, with percentile intervals from one shared cluster resample.

    Args:
        parts: {arm: `[N, ...]` per-item parts} on the same N items in the same order (`correct_parts`,
            `confusion_parts`).
        groups: `[N]` cluster of each item: the resampled unit (an image, a spatial block).
        statistic: sums `[..., *part_shape]` -> value `[...]` (`accuracy_statistic`, `miou_statistic`).
        pairs: (a, b) arm pairs; the entry "b-a" is statistic(b) − statistic(a).
        n_boot, seed, alpha: resamples, their seed, 1 − confidence.

    Returns:
        {arm or "b-a": {"value", "ci_low", "ci_high", "n_items", "n_clusters"}}.

    Note:
        Clusters, not items, are drawn (items of one image/block are not independent); every arm uses the same draw,
        so the difference's interval is paired.
    """
    summed = {arm: cluster_sums(p, groups)[0] for arm, p in parts.items()}  # {arm: [C, ...]}
    n_items = len(np.asarray(groups))
    n_clusters = len(next(iter(summed.values()))) if summed else 0
    weights = bootstrap_weights(n_clusters, n_boot, seed)  # [B, C]
    point, boot = {}, {}
    for arm, s in summed.items():
        flat = s.reshape(n_clusters, -1)  # [C, P]
        point[arm] = float(statistic(flat.sum(0).reshape(s.shape[1:])))
        boot[arm] = statistic((weights @ flat).reshape(n_boot, *s.shape[1:]))  # [B]
    out = {}
    info = {"n_items": n_items, "n_clusters": n_clusters}
    for arm in summed:
        lo, hi = percentile_interval(boot[arm], alpha)
        out[arm] = {"value": point[arm], "ci_low": lo, "ci_high": hi, **info}
    for a, b in pairs:
        lo, hi = percentile_interval(boot[b] - boot[a], alpha)
        out[f"{b}-{a}"] = {"value": point[b] - point[a], "ci_low": lo, "ci_high": hi, **info}
    return out


def stratified_paired_delta(
    strata: Sequence[tuple[Sequence[float], Sequence[float]]], n_boot: int = N_BOOT, seed: int = 0, alpha: float = ALPHA
) -> dict[str, float]:
    """Δ = mean over strata of (mean(b) − mean(a)), rows resampled within each stratum (paired), and its interval.

    Args:
        strata: per stratum (a task), `([n_t] a values, [n_t] b values)` of the same rows in the same order.
        n_boot, seed, alpha: resamples, their seed, 1 − confidence.

    Returns:
        {"delta", "ci_low", "ci_high", "n": [n_t per stratum]}.

    Note:
        Each task weighs the same in the mean (the report's "mean prior Δ"), whatever its row count.
    """
    if not strata:
        return {"delta": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": []}
    total = np.zeros(n_boot)
    point = 0.0
    for t, (a, b) in enumerate(strata):
        diff = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)  # [n_t]
        if diff.ndim != 1 or diff.size == 0 or len(a) != len(b):
            raise ValueError(f"stratum {t}: paired values need equal, non-empty 1-D shapes")
        w = bootstrap_weights(diff.size, n_boot, seed + t)  # [B, n_t]
        total += w @ diff / diff.size  # [B]
        point += diff.mean()
    lo, hi = percentile_interval(total / len(strata), alpha)
    return {"delta": point / len(strata), "ci_low": lo, "ci_high": hi, "n": [len(a) for a, _ in strata]}


# A bound this close to the null value (relative to max(1, |null|)) touches it: a percentile of resampled means that
# is exactly the null in real arithmetic can come out as 7e-20 from float summation (seen: a paired accuracy delta).
NULL_TOLERANCE = 1e-12


def separation(low: float, high: float, null: float = 0.0) -> int:
    """+1 when an interval lies above `null`, −1 when below, 0 when it contains or touches it (or is NaN).

    Note:
        A bound within `NULL_TOLERANCE` · max(1, |null|) of `null` counts as touching it, so float noise in a bound
        that is the null exactly never reads as an effect.
    """
    if low != low or high != high:
        return 0
    tol = NULL_TOLERANCE * max(1.0, abs(null))
    return 1 if low - null > tol else (-1 if null - high > tol else 0)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample standard deviation with ddof 1) of seed results; std NaN for a single value."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan")
    return float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else float("nan")
