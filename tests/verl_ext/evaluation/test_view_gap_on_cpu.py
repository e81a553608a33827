"""The invariance gap's arithmetic (verl_ext/evaluation/view_gap.py): per-view correctness from predictions.jsonl and
the paired gap with its image-level interval, checked by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from verl_ext.evaluation.view_gap import correct_by_view, gap_record, gap_statistics


def test_correct_by_view_keeps_the_images_every_view_has(tmp_path):
    records = [
        {"index": 7, "view": "identity", "label": "3", "prediction": "3"},
        {"index": 2, "view": "identity", "label": "1", "prediction": None},  # no answer: wrong
        {"index": 9, "view": "identity", "label": "0", "prediction": "0"},  # no rot90 record: dropped
        {"index": 7, "view": "rot90", "label": "3", "prediction": "8"},
        {"index": 2, "view": "rot90", "label": "1", "prediction": "1"},
    ]
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    images, correct = correct_by_view(path)
    assert images == [2, 7]  # index order
    assert correct["identity"].tolist() == [0.0, 1.0] and correct["rot90"].tolist() == [1.0, 0.0]


def test_gap_by_hand():
    correct = {
        "identity": np.array([1.0, 1.0, 1.0, 0.0]),  # 3/4 = 0.75
        "rot90": np.array([0.0, 1.0, 0.0, 0.0]),  # 1/4 = 0.25
        "hflip": np.array([1.0, 0.0, 0.0, 0.0]),  # 1/4 = 0.25
    }
    stats = gap_statistics(correct)
    assert stats["identity"]["value"] == pytest.approx(0.75)
    assert stats["transformed"]["value"] == pytest.approx(0.25)  # (1 + 1 + 0 + 0) right of 4 images x 2 views = 2/8
    assert stats["identity-transformed"]["value"] == pytest.approx(0.5)  # 0.75 - 0.25: the gap, original minus views
    assert stats["identity-rot90"]["value"] == pytest.approx(0.5)
    for stat in stats.values():
        assert stat["ci_low"] <= stat["value"] + 1e-12 and stat["value"] - 1e-12 <= stat["ci_high"]
        assert stat["n_clusters"] == 4


def test_gap_interval_is_paired_over_images():
    # every image: right upright, wrong turned -> each resample's gap is exactly 1, so the interval is [1, 1]
    n = 50
    stats = gap_statistics({"identity": np.ones(n), "rot90": np.zeros(n), "vflip": np.zeros(n)})
    gap = stats["identity-transformed"]
    assert (gap["value"], gap["ci_low"], gap["ci_high"]) == (1.0, 1.0, 1.0)
    # the same accuracies with no pairing structure: half the images right in both views -> gap 0 exactly
    half = (np.arange(n) % 2).astype(float)
    stats = gap_statistics({"identity": half, "rot90": half})
    assert (stats["identity-transformed"]["ci_low"], stats["identity-transformed"]["ci_high"]) == (0.0, 0.0)


def test_gap_record_by_hand(tmp_path):
    # image 0: right upright, right on rot90, wrong on hflip -> transformed share 1/2
    # image 1: wrong upright, wrong on both                 -> 0
    # original 1/2, transformed (1 + 0 + 0 + 0) / 4 = 0.25, gap 0.25
    records = [
        {"index": 0, "view": "identity", "label": "3", "prediction": "3"},
        {"index": 0, "view": "rot90", "label": "3", "prediction": "3"},
        {"index": 0, "view": "hflip", "label": "3", "prediction": "8"},
        {"index": 1, "view": "identity", "label": "1", "prediction": "7"},
        {"index": 1, "view": "rot90", "label": "1", "prediction": "7"},
        {"index": 1, "view": "hflip", "label": "1", "prediction": None},
    ]
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    rec = gap_record(path)
    assert rec["images"] == [0, 1] and rec["per_image_transformed"] == [0.5, 0.0]
    assert rec["accuracy"] == {"identity": 0.5, "rot90": 0.5, "hflip": 0.0}
    assert rec["transformed"]["value"] == pytest.approx(0.25) and rec["gap"]["value"] == pytest.approx(0.25)
    assert rec["gap_by_view"]["hflip"]["value"] == pytest.approx(0.5)  # 0.5 - 0


def test_gap_needs_the_original_view_and_another():
    with pytest.raises(ValueError, match="identity"):
        gap_statistics({"rot90": np.ones(3)})
    with pytest.raises(ValueError, match="identity"):
        gap_statistics({"identity": np.ones(3)})
