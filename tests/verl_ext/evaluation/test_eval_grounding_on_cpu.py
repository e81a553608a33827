"""Grounding as a prior task: box parsing (adversarial answers), IoU hand cases, the harness's evaluation and paired
comparison on rows written by `python -m data_prep grounding`."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from data_prep.__main__ import main as data_prep_main
from verl_ext.evaluation import forgetting as F
from verl_ext.evaluation.grounding import box_iou, parse_box, score_response
from verl_ext.evaluation.tasks import evaluate_tasks, read_predictions, task_kind


@pytest.mark.parametrize(
    "text, box",
    [
        ("[10, 20, 30, 40]", (10, 20, 30, 40)),
        ('{"bbox_2d": [10, 20, 30, 40]}', (10, 20, 30, 40)),
        ("(10.5,20),(30,40)", (10.5, 20, 30, 40)),
        ("[30, 20, 10, 40]", None),  # x2 <= x1
        ("[10, 20, 30]", None),  # three numbers
        ("[10, 20, 30, 40, 50]", None),  # five
        ("the box is [10, 20, 30, 40]", None),  # prose
        ("__import__('os')", None),
        (None, None),
    ],
)
def test_parse_box_is_strict(text, box):
    assert parse_box(text) == box


def test_iou_hand_cases():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    # overlap 5 x 10 = 50; union 100 + 100 − 50 = 150 -> 1/3
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0  # touching edges
    # inside: 4 x 4 = 16 of 100 -> 0.16 (below the 0.5 hit)
    out = score_response("<think></think><answer>[2, 2, 6, 6]</answer>", "[0, 0, 10, 10]")
    assert out == {"iou": pytest.approx(0.16), "hit": 0.0, "answer_valid": 1.0}
    assert score_response("no answer", "[0, 0, 10, 10]") == {"iou": 0.0, "hit": 0.0, "answer_valid": 0.0}


class _FixedBackend:
    """Answers every row with the same response (the harness only calls `generate`)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def generate(self, views):
        return [self.text for _ in views]


def _source(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for k in range(3):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (100, 200, 3), dtype=np.uint8)).save(buf, format="PNG")
        rows.append(
            {"image": {"bytes": buf.getvalue(), "path": None}, "expression": f"thing {k}", "bbox": [0, 0, 100, 50]}
        )
    path = tmp_path / "refcoco.parquet"
    pd.DataFrame(rows).to_parquet(path)
    return path


def test_grounding_rows_evaluate_and_compare(tmp_path):
    assert data_prep_main(["grounding", "--source", str(_source(tmp_path)), "--out", str(tmp_path / "g")]) in (None, 0)
    test = tmp_path / "g" / "test.parquet"
    assert task_kind(test) == "grounding"
    # 200 x 100 -> qwen_size 196 x 112 (round to 28: 196, 112); box xywh [0, 0, 100, 50] -> [0, 0, 98, 56]
    assert pd.read_parquet(test)["reward_model"][0]["ground_truth"] == "[0, 0, 98, 56]"
    right = "<think></think><answer>[0, 0, 98, 56]</answer>"
    base = evaluate_tasks(
        _FixedBackend(right), {"refcoco": str(test)}, tmp_path / "base", echo=lambda _: None, show_progress=False
    )
    assert base["refcoco"]["accuracy"] == 1.0 and base["refcoco"]["mean_iou"] == 1.0
    evaluate_tasks(
        _FixedBackend("<answer>[150, 80, 190, 100]</answer>"),
        {"refcoco": str(test)},
        tmp_path / "t",
        echo=lambda _: None,
        show_progress=False,
    )
    out = F.compare_task(read_predictions(tmp_path / "base" / "refcoco"), read_predictions(tmp_path / "t" / "refcoco"))
    assert out["kind"] == "grounding" and out["n"] == 3
    assert (out["accuracy"]["delta"], out["accuracy"]["ci_high"]) == (-1.0, -1.0) and out["reading"] == "fell"
