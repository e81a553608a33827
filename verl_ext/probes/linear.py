"""Linear probes on frozen features: logistic regression per block, the L2 strength chosen on the validation split.

PIVOT (arXiv 2510.16333) probes penultimate-layer features, mean over patches, L2-normalised, with scikit-learn's lbfgs
logistic regression over C ∈ {0.01, 0.03, 0.1, 0.316, 1, 3.16}. Their script picks C on the split it reports (an
optimistic number) and passes `multi_class`, which scikit-learn >= 1.7 rejects. Here C is chosen on `val` only and
the reported number is `test` with that C (fit on `train`). The default grid spans 0.1 .. 100 in half decades
(L2-normalised features need weaker penalties than 3.16 to separate), fitted in increasing C with warm starts
(each fit starts from the previous solution), which keeps lbfgs fast on near-separable features.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

C_GRID = (0.1, 0.316, 1.0, 3.16, 10.0, 31.6, 100.0)


@dataclass(frozen=True)
class ProbeResult:
    """One probe fit: the chosen C, the score on val (used to choose) and on test (reported), test predictions."""

    c: float
    val: float
    test: float
    train: float
    test_pred: np.ndarray | None = field(default=None, compare=False, repr=False)  # [n_test] (for the intervals)

    def as_dict(self) -> dict[str, float]:
        """The scores (no predictions)."""
        return {"c": self.c, "val": self.val, "test": self.test, "train": self.train}


def _fits(x: np.ndarray, y: np.ndarray, grid: Sequence[float], seed: int):
    """(C, fitted model) for each C in increasing order, each fit warm-started from the previous one."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=1000, random_state=seed, warm_start=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for c in sorted(grid):
            model.set_params(C=c)
            model.fit(x, y)
            yield c, model


def mean_iou(pred: np.ndarray, true: np.ndarray, num_classes: int) -> float:
    """Mean intersection-over-union over the classes present in `true` or `pred` (`[n]` integer labels each)."""
    ious = []
    for k in range(num_classes):
        inter = np.sum((pred == k) & (true == k))
        union = np.sum((pred == k) | (true == k))
        if union:
            ious.append(inter / union)
    return float(np.mean(ious)) if ious else float("nan")


def accuracy(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(pred == true))


def fit_probe(
    x: dict[str, np.ndarray],
    y: dict[str, np.ndarray],
    metric: str = "accuracy",
    num_classes: int | None = None,
    grid: Sequence[float] = C_GRID,
    seed: int = 0,
) -> ProbeResult:
    """Logistic regression for each C on `train`, C chosen by `metric` on `val`, scored on `test`.

    Args:
        x: {"train", "val", "test"} -> `[n, D]` features.
        y: the same splits -> `[n]` integer labels.
        metric: "accuracy" or "miou" (segmentation: mean IoU over classes).
        num_classes: needed for "miou".
        grid: candidate inverse L2 strengths C.
        seed: solver seed.

    Note:
        Ties on val keep the smaller C (the stronger penalty). A class missing from `train` cannot be predicted.
    """
    score = (lambda p, t: mean_iou(p, t, num_classes)) if metric == "miou" else accuracy
    best, best_val = None, -np.inf
    for c, model in _fits(x["train"], y["train"], grid, seed):
        val = score(model.predict(x["val"]), y["val"])
        if val > best_val + 1e-12:  # the model is refitted at the next C: score test and train now
            best_val = val
            test_pred = model.predict(x["test"])
            best = ProbeResult(
                c=float(c),
                val=float(val),
                test=float(score(test_pred, y["test"])),
                train=float(score(model.predict(x["train"]), y["train"])),
                test_pred=np.asarray(test_pred, dtype=np.int64),
            )
    return best


def majority_baseline(y: dict[str, np.ndarray]) -> float:
    """Test accuracy of always answering train's most frequent class."""
    values, counts = np.unique(y["train"], return_counts=True)
    return float(np.mean(y["test"] == values[np.argmax(counts)]))
