"""The tiny image task: verl's multimodal parquet schema (read back with RLHFDataset's loader) and its rewards."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from verl_ext.cpu.tiny_task import CLASSES, DATA_SOURCE, build_tiny_task, compute_dense_score, compute_score


def test_parquet_rows_follow_verls_multimodal_schema(tmp_path: Path) -> None:
    train, val = build_tiny_task(tmp_path, train_rows=5, val_rows=2)
    rows = pq.read_table(train).to_pylist()
    assert len(rows) == 5 and pq.read_table(val).num_rows == 2
    for index, row in enumerate(rows):
        assert set(row) == {"data_source", "prompt", "images", "ability", "reward_model", "extra_info"}
        assert row["data_source"] == DATA_SOURCE
        assert row["prompt"][0]["role"] == "user" and row["prompt"][0]["content"].count("<image>") == 1
        assert len(row["images"]) == 1 and row["images"][0]["path"] is None
        assert Image.open(io.BytesIO(row["images"][0]["bytes"])).size == (56, 56)
        assert row["reward_model"] == {"style": "rule", "ground_truth": list(CLASSES)[index % len(CLASSES)]}
        assert row["extra_info"]["split"] == "train" and row["extra_info"]["index"] == index
        assert row["extra_info"]["class_names"] == list(CLASSES)
    # consecutive rows have prompts of different lengths (see QUESTIONS)
    lengths = [len(row["prompt"][0]["content"]) for row in rows]
    assert all(a != b for a, b in zip(lengths, lengths[1:]))


def test_existing_files_are_kept(tmp_path: Path) -> None:
    train, _ = build_tiny_task(tmp_path, train_rows=4)
    build_tiny_task(tmp_path, train_rows=9)
    assert pq.read_table(train).num_rows == 4


@pytest.mark.parametrize(
    ("response", "label", "expected"),
    [
        ("<think>red, clearly</think><answer>red</answer>", "red", 1.1),
        ("<think>x</think> <answer> Red </answer>", "red", 1.1),
        ("<answer>red</answer>", "red", 1.0),
        ("<think>x</think><answer>red or blue</answer>", "red", 0.1),
        ("<think>x</think><answer></answer>", "red", 0.1),
        ("<answer>blue</answer><answer>green</answer>", "green", 1.0),
        ("no tags at all", "blue", 0.0),
    ],
)
def test_exact_reward(response: str, label: str, expected: float) -> None:
    assert compute_score(DATA_SOURCE, response, label) == pytest.approx(expected)


def test_dense_reward_adds_the_share_of_label_letters() -> None:
    assert compute_dense_score(DATA_SOURCE, "rrxx", "red") == pytest.approx(0.5)
    assert compute_dense_score(DATA_SOURCE, "", "red") == 0.0
    full = "<answer>red</answer>"
    assert compute_dense_score(DATA_SOURCE, full, "red") == pytest.approx(
        1.0 + sum(c in "red" for c in full) / len(full)
    )
