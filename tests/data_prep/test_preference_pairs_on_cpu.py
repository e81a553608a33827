"""`python -m data_prep preference-pairs`: label-derived and user pairs, schema checks, one-line errors."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from data_prep.__main__ import run
from data_prep.preference_pairs import PAIR_SCHEMA, check_texts, prompt_messages
from data_prep.report import DataPrepError

REPO = Path(__file__).resolve().parents[2]


def _png(color=(10, 200, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), color).save(buf, format="PNG")
    return buf.getvalue()


def test_label_pairs_from_real_tiles(tmp_path):
    run(["demo-rs", "--out", str(tmp_path / "s2"), "--no-progress"])
    run(["preference-pairs", "--from-rows", str(tmp_path / "s2" / "train.parquet"), "--out", str(tmp_path / "p")])
    table = pq.read_table(tmp_path / "p" / "pairs.parquet")
    assert table.schema.equals(PAIR_SCHEMA)
    rows = table.to_pylist()
    for row in rows:
        label = row["reward_model"]["ground_truth"]
        assert row["chosen"] == f"<think>The image shows {label}.</think><answer>{label}</answer>"
        wrong = row["rejected"].split("<answer>")[1].split("</answer>")[0]
        assert wrong != label and wrong in row["extra_info"]["class_names"]
    # seeded: the same bytes again
    run(["preference-pairs", "--from-rows", str(tmp_path / "s2" / "train.parquet"), "--out", str(tmp_path / "q")])
    assert pq.read_table(tmp_path / "q" / "pairs.parquet").equals(table)
    assert json.loads((tmp_path / "p" / "report.json").read_text())["rows"] == len(rows)


def test_user_pairs_jsonl_with_image_root_and_skips(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    (root / "a.png").write_bytes(_png())
    records = [
        {"image": "a.png", "question": "What is it?", "chosen": "grass", "rejected": "sand", "label": "grass"},
        {"image": "a.png", "question": "<image>Same?", "chosen": "x", "rejected": "x"},  # same text
        {"image": "../outside.png", "question": "Q", "chosen": "a", "rejected": "b"},  # outside the root
        {"image": "a.png", "question": "<image><image>two", "chosen": "a", "rejected": "b"},  # two placeholders
    ]
    src = tmp_path / "pairs.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "out"
    args = ["preference-pairs", "--pairs", str(src), "--image-root", str(root), "--out", str(out), "--on-error", "skip"]
    report = run(args)
    assert report["rows"] == 1
    assert report["skipped"]["by_reason"] == {"bad_prompt": 1, "missing_image": 1, "same_response": 1}
    row = pq.read_table(out / "pairs.parquet").to_pylist()[0]
    assert row["prompt"][0]["content"] == "<image>What is it?" and row["reward_model"]["ground_truth"] == "grass"


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text(json.dumps({"image": "nope.png", "question": "Q", "chosen": "a", "rejected": "b"}) + "\n")
    proc = subprocess.run(
        [sys.executable, "-m", "data_prep", "preference-pairs", "--pairs", str(src), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "missing_image" in proc.stderr
    assert not (tmp_path / "o" / "pairs.parquet").exists()  # nothing half-written
    src.write_text("{not json")
    with pytest.raises(DataPrepError, match="not JSON lines"):
        run(["preference-pairs", "--pairs", str(src), "--out", str(tmp_path / "o")])


def test_text_and_prompt_checks():
    assert check_texts("a", "b") is None
    assert check_texts("", "b") == "empty_response" and check_texts("a", None) == "empty_response"
    assert check_texts("a", "a") == "same_response"
    assert prompt_messages("hi") == [{"role": "user", "content": "<image>hi"}]
    assert prompt_messages("<image><image>") is None and prompt_messages(3) is None
