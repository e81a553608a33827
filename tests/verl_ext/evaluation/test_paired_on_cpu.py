"""verl_ext/evaluation/paired.py: per-image held-out numbers from predictions.jsonl records, and the paired
(seed, image) comparison against GRPO with a bootstrap over images."""

from __future__ import annotations

import numpy as np
import pytest

from verl_ext.evaluation.paired import image_values, paired_comparison, per_seed_delta
from verl_ext.stats import bootstrap_weights


def rec(index, view, pred, dist, label="a"):
    return {"index": index, "view": view, "label": label, "prediction": pred, "answer_distribution": dist}


def test_image_values_by_hand():
    records = [
        rec(0, "identity", "a", {"a": 1.0, "b": 0.0}),
        rec(0, "rot90", "b", {"a": 0.0, "b": 1.0}),  # disjoint supports: JS = 1 bit
        rec(0, "hflip", "a", {"a": 1.0, "b": 0.0}),  # identical: JS = 0
        rec(1, "identity", None, {"a": 0.5, "b": 0.5}),  # no valid answer on the original view
        rec(1, "rot90", None, {"a": 0.5, "b": 0.5}),
    ]
    got = image_values(records)
    # image 0: js (1 + 0)/2; agreement: rot90 differs, hflip agrees -> 1/2; original correct; transforms 1 of 2
    assert got[0] == {"js": 0.5, "agreement": 0.5, "accuracy": 1.0, "accuracy_transformed": 0.5}
    # image 1: two missing answers are not an agreement (the evaluation's rule: same VALID answer)
    assert got[1] == {"js": 0.0, "agreement": 0.0, "accuracy": 0.0, "accuracy_transformed": 0.0}


def test_image_values_refuses_an_image_without_its_original_view():
    with pytest.raises(ValueError, match="image 3"):
        image_values([rec(3, "rot90", "a", {"a": 1.0})])


def table(values):
    """{seed: {image: {"js": v}}} from {seed: [v per image]}."""
    return {s: {i: {"js": float(v)} for i, v in enumerate(vs)} for s, vs in values.items()}


def test_a_constant_shift_has_a_point_interval_and_the_ratio_of_means():
    base = table({0: [0.2, 0.2, 0.2], 1: [0.2, 0.2, 0.2]})
    arm = table({0: [0.1, 0.1, 0.1], 1: [0.1, 0.1, 0.1]})
    got = paired_comparison(base, arm, "js", n_boot=200)
    # every resample moves both arms alike: Δ = 0.1 − 0.2 = −0.1 and ratio 0.1/0.2 = 0.5, with no spread
    assert got["delta"] == pytest.approx(-0.1) and got["ratio"] == pytest.approx(0.5)
    assert got["delta_low"] == pytest.approx(-0.1) and got["delta_high"] == pytest.approx(-0.1)
    assert got["ratio_low"] == pytest.approx(0.5) and got["ratio_high"] == pytest.approx(0.5)
    assert (got["n_items"], got["n_images"]) == (6, 3)


def test_interval_matches_a_loop_over_the_same_draws():
    rng = np.random.default_rng(1)
    base = table({s: rng.random(5) for s in (0, 1, 2)})
    arm = table({s: rng.random(5) for s in (0, 1, 2)})
    got = paired_comparison(base, arm, "js", n_boot=300, seed=7)
    weights = bootstrap_weights(5, 300, 7)  # [B, images]: the draws paired_comparison uses
    deltas, ratios = [], []
    for w in weights:
        num_a = num_b = count = 0.0
        for s in (0, 1, 2):
            for i in range(5):  # every (seed, image) item weighs its image's draw count
                num_a += w[i] * base[s][i]["js"]
                num_b += w[i] * arm[s][i]["js"]
                count += w[i]
        deltas.append(num_b / count - num_a / count)
        ratios.append(num_b / num_a)
    assert got["delta_low"] == pytest.approx(np.quantile(deltas, 0.025))
    assert got["delta_high"] == pytest.approx(np.quantile(deltas, 0.975))
    assert got["ratio_low"] == pytest.approx(np.quantile(ratios, 0.025))
    assert got["ratio_high"] == pytest.approx(np.quantile(ratios, 0.975))
    mean_a = np.mean([base[s][i]["js"] for s in base for i in base[s]])
    mean_b = np.mean([arm[s][i]["js"] for s in arm for i in arm[s]])
    assert got["delta"] == pytest.approx(mean_b - mean_a) and got["ratio"] == pytest.approx(mean_b / mean_a)


def test_only_shared_items_are_paired():
    base = table({0: [0.2, 0.4], 1: [0.3, 0.3]})
    arm = table({0: [0.1, 0.1]})  # seed 1 not run for the arm
    got = paired_comparison(base, arm, "js", n_boot=50)
    # items (0,0), (0,1): base mean 0.3, arm 0.1
    assert got["n_items"] == 2 and got["delta"] == pytest.approx(-0.2)
    assert per_seed_delta(base, arm, "js") == {0: pytest.approx(-0.2)}
    with pytest.raises(ValueError, match="share no"):
        paired_comparison(base, table({5: [0.1]}), "js")
