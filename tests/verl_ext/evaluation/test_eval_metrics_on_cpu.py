"""Evaluation metrics against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from verl_ext.evaluation import metrics as M

LABELS = ["a", "a", "b", "b", "c"]
PREDS = ["a", "b", "b", None, "zzz"]


def test_accuracy() -> None:
    # correct: rows 0 and 2 -> 2/5
    assert M.accuracy(PREDS, LABELS) == pytest.approx(0.4)
    assert math.isnan(M.accuracy([], []))
    with pytest.raises(ValueError, match="length"):
        M.accuracy(["a"], [])


def test_per_class_accuracy() -> None:
    # a: rows 0,1 -> 1/2; b: rows 2,3 -> 1/2; c: row 4 -> 0/1; d: no rows -> None
    assert M.per_class_accuracy(PREDS, LABELS, ["a", "b", "c", "d"]) == {"a": 0.5, "b": 0.5, "c": 0.0, "d": None}


def test_confusion_matrix() -> None:
    # columns a, b, c, (invalid); None and "zzz" (outside the classes) both go to (invalid)
    expected = np.array(
        [
            [1, 1, 0, 0],  # a -> a, a -> b
            [0, 1, 0, 1],  # b -> b, b -> None
            [0, 0, 0, 1],  # c -> zzz
        ]
    )
    np.testing.assert_array_equal(M.confusion_matrix(PREDS, LABELS, ["a", "b", "c"]), expected)
    # a label outside the classes is ignored
    assert M.confusion_matrix(["a"], ["q"], ["a"]).sum() == 0


def test_agreement() -> None:
    orig = ["a", "b", None, "c"]
    trans = ["a", "c", None, "c"]
    # row 0 agrees, row 1 differs, row 2 both invalid (not agreement), row 3 agrees -> 2/4
    assert M.agreement(orig, trans) == pytest.approx(0.5)
    assert math.isnan(M.agreement([], []))


def test_js_divergence_hand_computed() -> None:
    # identical -> 0; disjoint supports -> 1 (base 2)
    assert M.js_divergence(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == pytest.approx(0.0)
    assert M.js_divergence(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)
    # P=(1,0), Q=(1/2,1/2): M=(3/4,1/4); KL(P||M)=log2(4/3)=0.415037;
    # KL(Q||M)=1/2 log2((1/2)/(3/4)) + 1/2 log2((1/2)/(1/4)) = 1/2(-0.584963) + 1/2(1) = 0.207519
    # JS = (0.415037 + 0.207519)/2 = 0.311278
    assert M.js_divergence(np.array([1.0, 0.0]), np.array([0.5, 0.5])) == pytest.approx(0.311278, abs=1e-6)
    with pytest.raises(ValueError, match="shapes"):
        M.js_divergence(np.ones(2) / 2, np.ones(3) / 3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_js_is_symmetric_and_bounded(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p, q = rng.dirichlet(np.ones(7)), rng.dirichlet(np.ones(7))
    d = M.js_divergence(p, q)
    assert 0.0 <= d <= 1.0
    assert d == pytest.approx(M.js_divergence(q, p))


def test_mean_js_softmax_argmax() -> None:
    a = [np.array([1.0, 0.0]), np.array([0.5, 0.5])]
    b = [np.array([0.0, 1.0]), np.array([0.5, 0.5])]
    # (1 + 0) / 2
    assert M.mean_js(a, b) == pytest.approx(0.5)
    # softmax(log 1, log 3) = (1/4, 3/4)
    np.testing.assert_allclose(M.softmax(np.log([1.0, 3.0])), [0.25, 0.75])
    # large log-scores stay finite
    np.testing.assert_allclose(M.softmax(np.array([1000.0, 1000.0])), [0.5, 0.5])
    assert M.argmax_predictions([np.array([0.2, 0.8]), np.array([0.5, 0.5])], [["x", "y"], ["u", "v"]]) == ["y", "u"]
    assert M.mean_or_nan([float("nan"), 1.0, 0.0]) == 0.5
    assert math.isnan(M.mean_or_nan([]))
