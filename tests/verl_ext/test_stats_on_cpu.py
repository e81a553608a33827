"""verl_ext.stats: hand-computed cases (arithmetic in the comments) and the matmul bootstrap against a loop."""

from __future__ import annotations

import numpy as np
import pytest

from verl_ext import stats as S
from verl_ext.probes.linear import mean_iou


def test_weights_are_seeded_draw_counts():
    w = S.bootstrap_weights(5, n_boot=7, seed=3)
    assert w.shape == (7, 5) and np.all(w.sum(1) == 5) and np.all(w >= 0)
    assert np.array_equal(w, S.bootstrap_weights(5, n_boot=7, seed=3))
    with pytest.raises(ValueError):
        S.bootstrap_weights(0)


def test_cluster_sums_hand_case():
    # items 0, 1 in cluster 7; item 2 in cluster 3 -> sorted ids [3, 7]: sums [v2, v0 + v1]
    sums, ids = S.cluster_sums(np.array([[1.0, 1.0], [0.0, 1.0], [1.0, 1.0]]), [7, 7, 3])
    assert ids.tolist() == [3, 7] and sums.tolist() == [[1.0, 1.0], [1.0, 2.0]]


def test_miou_hand_case_matches_the_probe_metric():
    true, pred = np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1])
    # class 0: inter 1, union 2 -> 1/2; class 1: inter 1, union 1 + 3 − 1 = 3 -> 1/3; class 2: inter 0, union 1 -> 0
    expected = (0.5 + 1 / 3 + 0.0) / 3  # 0.2778
    conf = S.confusion_parts(true, pred, 4).sum(0)  # class 3 absent everywhere: not counted
    assert S.miou_statistic(conf) == pytest.approx(expected, abs=1e-15)
    assert mean_iou(pred, true, 4) == pytest.approx(expected, abs=1e-15)


def test_percentile_interval_and_separation_and_mean_std():
    # 101 samples 0..100: the 5 % and 95 % quantiles are 5 and 95 (linear interpolation hits them exactly)
    assert S.percentile_interval(np.arange(101.0), alpha=0.1) == (5.0, 95.0)
    assert S.percentile_interval(np.array([np.nan])) != S.percentile_interval(np.array([np.nan]))  # NaNs
    assert (S.separation(0.01, 0.2), S.separation(-0.2, -0.01), S.separation(-0.1, 0.1)) == (1, -1, 0)
    assert S.separation(float("nan"), 1.0) == 0
    # float noise at the null is no effect: a bootstrap bound of 7e-20 where the exact value is 0 (a paired accuracy
    # delta of 3 seeds x 120 images), a ratio bound of 1 + 2e-16; a real bound of 1e-9 still separates
    assert (S.separation(7.047e-20, 0.0056), S.separation(-0.2, -1e-17)) == (0, 0)
    assert (S.separation(1.0 + 2e-16, 1.2, null=1.0), S.separation(0.99, 1.0 - 2e-16, null=1.0)) == (0, 0)
    assert (S.separation(1e-9, 0.1), S.separation(0.996, 0.9975, null=1.0)) == (1, -1)
    mean, std = S.mean_std([1.0, 2.0, 3.0])  # mean 2; var = (1 + 0 + 1) / (3 − 1) = 1
    assert (mean, std) == (2.0, 1.0) and np.isnan(S.mean_std([0.5])[1])


def test_one_cluster_gives_a_point_interval_and_identical_arms_a_zero_difference():
    parts = {"a": S.correct_parts([0, 1, 1], [0, 1, 0]), "b": S.correct_parts([0, 1, 1], [0, 0, 0])}
    out = S.paired_cluster_bootstrap(parts, [0, 0, 0], S.accuracy_statistic, pairs=[("a", "b")], n_boot=50)
    # one cluster: every resample is the whole set: a = 2/3, b = 1/3, b − a = −1/3 with zero width
    assert out["a"]["value"] == out["a"]["ci_low"] == out["a"]["ci_high"] == pytest.approx(2 / 3)
    assert out["b-a"]["ci_low"] == out["b-a"]["ci_high"] == pytest.approx(-1 / 3)
    same = S.paired_cluster_bootstrap({"a": parts["a"], "b": parts["a"]}, [0, 1, 2], S.accuracy_statistic, [("a", "b")])
    assert same["b-a"]["ci_low"] == same["b-a"]["ci_high"] == 0.0  # paired: the same draw for both arms


def test_paired_cluster_bootstrap_matches_a_loop_over_resampled_items():
    rng = np.random.default_rng(0)
    n, k = 60, 3
    true = rng.integers(0, k, n)
    preds = {"sft": np.where(rng.random(n) < 0.6, true, rng.integers(0, k, n)), "dpo": rng.integers(0, k, n)}
    groups = rng.integers(0, 12, n)  # 12 spatial blocks
    parts = {m: S.confusion_parts(true, p, k) for m, p in preds.items()}
    out = S.paired_cluster_bootstrap(parts, groups, S.miou_statistic, [("sft", "dpo")], n_boot=200, seed=5)
    weights = S.bootstrap_weights(len(np.unique(groups)), 200, 5)
    ids = np.unique(groups)
    diffs = []
    for w in weights:  # the loop reference: rebuild each resample's items, score with the probe's own mean_iou
        drawn = np.repeat(np.arange(len(ids)), w.astype(int))  # cluster c appears w[c] times
        items = np.concatenate([np.flatnonzero(groups == ids[c]) for c in drawn])
        diffs.append(mean_iou(preds["dpo"][items], true[items], k) - mean_iou(preds["sft"][items], true[items], k))
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    assert out["dpo-sft"]["ci_low"] == pytest.approx(lo, abs=1e-12)
    assert out["dpo-sft"]["ci_high"] == pytest.approx(hi, abs=1e-12)
    assert out["dpo-sft"]["value"] == pytest.approx(
        mean_iou(preds["dpo"], true, k) - mean_iou(preds["sft"], true, k), abs=1e-12
    )
    assert out["sft"]["n_clusters"] == len(ids) and out["sft"]["n_items"] == n


def test_stratified_paired_delta_hand_case():
    # task 1: b − a = [1, 1] (mean 1); task 2: [0] (mean 0); each task weighs 1/2 -> Δ = 0.5 in every resample
    out = S.stratified_paired_delta([([0, 0], [1, 1]), ([1], [1])], n_boot=30)
    assert out == {"delta": 0.5, "ci_low": 0.5, "ci_high": 0.5, "n": [2, 1]}
    spread = S.stratified_paired_delta([([0, 0, 0, 0], [1, 0, 1, 0])], n_boot=400)
    assert spread["delta"] == 0.5 and spread["ci_low"] < 0.5 < spread["ci_high"]
    with pytest.raises(ValueError):
        S.stratified_paired_delta([([0, 1], [1])])
