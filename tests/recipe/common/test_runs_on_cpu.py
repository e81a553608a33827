"""The one metrics reader (every record of a step merged) and the one final-checkpoint finder."""

from __future__ import annotations

import json

import pytest

from recipe.common.runs import final_hf, metric_series, read_metrics


def test_read_metrics_merges_every_record_of_a_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    records = [
        {"step": 1, "data": {"loss": 2.0, "reward": 0.5}},
        {"step": 1, "data": {"val/acc": 0.25}},  # a second log call for step 1 (e.g. validation)
        {"step": 2, "data": {"loss": 1.0}},
        {"step": 2, "data": {"loss": 0.75}},  # the same key again: the later value
    ]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    assert read_metrics(path) == {1: {"loss": 2.0, "reward": 0.5, "val/acc": 0.25}, 2: {"loss": 0.75}}
    # keeping only a step's last record would have lost step 1's loss and reward
    assert metric_series(path, "loss") == [(1, 2.0), (2, 0.75)]
    assert metric_series(path, "val/acc") == [(1, 0.25)]
    assert read_metrics(tmp_path / "absent.jsonl") == {} and metric_series(tmp_path / "absent.jsonl", "x") == []


@pytest.mark.parametrize("line", ['{"step": 1, "data": {"a"', '{"data": {}}', '{"step": 1, "data": [1]}', "[1]"])
def test_read_metrics_names_a_bad_line(tmp_path, line):
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1, "data": {"a": 1}}\n' + line + "\n")
    with pytest.raises(ValueError, match=r"m\.jsonl:2: not a verl metrics record"):
        read_metrics(path)


def test_final_hf_follows_verls_latest_step(tmp_path):
    assert final_hf(tmp_path) is None  # nothing saved yet
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("4\n")
    assert final_hf(tmp_path) is None  # the step folder has no HF weights (interrupted save)
    for step, sub in ((2, "huggingface"), (4, "actor/huggingface")):
        (tmp_path / f"global_step_{step}" / sub).mkdir(parents=True)
        (tmp_path / f"global_step_{step}" / sub / "config.json").write_text("{}")
    assert final_hf(tmp_path) == tmp_path / "global_step_4" / "actor" / "huggingface"  # RL trainer layout
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("2")
    assert final_hf(tmp_path) == tmp_path / "global_step_2" / "huggingface"  # SFT trainer layout
