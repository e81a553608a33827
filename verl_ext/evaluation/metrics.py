"""Pure evaluation metrics: accuracy, per-class accuracy, confusion matrix, cross-view agreement, JS divergence.

Predictions are canonical class strings (see `verl_ext.rewards.parse_prediction`) or None for an invalid answer; an
invalid answer is never correct and never agrees with anything. Answer distributions are arrays of shape (C,) over a
row's class vocabulary. Numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

INVALID = "(invalid)"


def accuracy(preds: Sequence[str | None], labels: Sequence[str]) -> float:
    """Fraction of rows whose prediction equals the label (None never does); NaN for no rows.

    Args:
        preds: N predictions (class strings or None).
        labels: N label strings.
    """
    _check_same_length(preds, labels)
    if not labels:
        return float("nan")
    return sum(p is not None and p == y for p, y in zip(preds, labels)) / len(labels)


def per_class_accuracy(
    preds: Sequence[str | None], labels: Sequence[str], classes: Sequence[str]
) -> dict[str, float | None]:
    """Accuracy restricted to the rows of each true class (recall per class); None for a class with no rows.

    Args:
        preds: N predictions.
        labels: N labels.
        classes: the classes to report, in order.
    """
    _check_same_length(preds, labels)
    out: dict[str, float | None] = {}
    for cls in classes:
        rows = [p for p, y in zip(preds, labels) if y == cls]
        out[cls] = None if not rows else sum(p == cls for p in rows) / len(rows)
    return out


def confusion_matrix(preds: Sequence[str | None], labels: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    """Counts M[i, j] = #rows with true class classes[i] predicted as column j; shape (K, K + 1).

    Columns are `classes` then one `INVALID` column for a None prediction or a prediction outside `classes`.
    Rows whose label is not in `classes` are ignored.

    Args:
        preds: N predictions.
        labels: N labels.
        classes: the K classes (rows and first K columns).
    """
    _check_same_length(preds, labels)
    index = {c: i for i, c in enumerate(classes)}
    matrix = np.zeros((len(classes), len(classes) + 1), dtype=np.int64)
    for pred, label in zip(preds, labels):
        if label not in index:
            continue
        matrix[index[label], index.get(pred, len(classes)) if pred is not None else len(classes)] += 1
    return matrix


def agreement(preds_a: Sequence[str | None], preds_b: Sequence[str | None]) -> float:
    """Cross-view answer agreement: fraction of rows where both views give the same VALID answer; NaN for no rows.

    The evaluation counterpart of the OC reward (`verl_ext.rewards.oc_agreement`).

    Args:
        preds_a: N predictions on the original views.
        preds_b: N predictions on the transformed views (same rows, same order).
    """
    _check_same_length(preds_a, preds_b)
    if not preds_a:
        return float("nan")
    return sum(a is not None and a == b for a, b in zip(preds_a, preds_b)) / len(preds_a)


def softmax(scores: np.ndarray) -> np.ndarray:
    """Normalise log-scores of shape (C,) into a distribution over the C classes (stable softmax)."""
    scores = np.asarray(scores, dtype=np.float64)
    shifted = np.exp(scores - scores.max())
    return shifted / shifted.sum()


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence with log base 2, in [0, 1].

    Paper eq. (4) (arXiv 2601.16419): D_JS(P ‖ Q) = ½ KL(P ‖ M) + ½ KL(Q ‖ M), M = ½ (P + Q); "bounded and
    symmetric, in [0, 1]", hence base 2. Terms with zero probability contribute 0 (0 · log 0 = 0).

    Args:
        p: shape (C,), a distribution (non-negative, sums to 1).
        q: shape (C,), a distribution over the same C classes.
    """
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"js_divergence: shapes differ, {p.shape} vs {q.shape}")
    m = 0.5 * (p + q)

    def _kl(a: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / m[mask])))

    # Clip the float round-off (a tiny negative for identical inputs, or 1 + 1e-16).
    return float(min(max(0.5 * _kl(p) + 0.5 * _kl(q), 0.0), 1.0))


def mean_js(dists_a: Sequence[np.ndarray], dists_b: Sequence[np.ndarray]) -> float:
    """Mean over rows of `js_divergence(dists_a[i], dists_b[i])`; NaN for no rows.

    Args:
        dists_a: N distributions (each shape (C_i,)) on the original views.
        dists_b: N distributions on the transformed views, same shapes.
    """
    _check_same_length(dists_a, dists_b)
    if not dists_a:
        return float("nan")
    return float(np.mean([js_divergence(a, b) for a, b in zip(dists_a, dists_b)]))


def argmax_predictions(dists: Sequence[np.ndarray], vocabularies: Sequence[Sequence[str]]) -> list[str]:
    """The most probable class of each row's answer distribution (the first one on ties).

    Args:
        dists: N distributions, dists[i] of shape (len(vocabularies[i]),).
        vocabularies: N class lists.
    """
    _check_same_length(dists, vocabularies)
    return [vocab[int(np.argmax(d))] for d, vocab in zip(dists, vocabularies)]


def mean_or_nan(values: Sequence[float]) -> float:
    """Mean of the non-NaN values; NaN if there are none."""
    kept = [v for v in values if v == v]
    return float(np.mean(kept)) if kept else float("nan")


def _check_same_length(a: Sequence, b: Sequence) -> None:
    """Raise ValueError when two per-row sequences differ in length."""
    if len(a) != len(b):
        raise ValueError(f"per-row sequences differ in length: {len(a)} vs {len(b)}")
