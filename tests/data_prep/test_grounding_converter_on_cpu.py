"""`python -m data_prep grounding`: the processor's resize reproduced, boxes scaled into that frame, bad boxes
refused or counted."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from data_prep.__main__ import main
from data_prep.grounding import qwen_size, scaled_box


@pytest.mark.parametrize("size", [(200, 100), (640, 480), (57, 3000), (4000, 3000), (30, 30)])
def test_qwen_size_matches_the_processor(size):
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    h, w = smart_resize(size[1], size[0], factor=28, min_pixels=4 * 28 * 28, max_pixels=1280 * 28 * 28)
    assert qwen_size(*size) == (w, h)


def test_scaled_box_hand_cases():
    # xywh [10, 20, 30, 40] = xyxy [10, 20, 40, 60]; 100 x 100 -> 200 x 50: x × 2, y × 0.5
    assert scaled_box([10, 20, 30, 40], "xywh", (100, 100), (200, 50)) == [20, 10, 80, 30]
    assert scaled_box([10, 20, 40, 60], "xyxy", (100, 100), (200, 50)) == [20, 10, 80, 30]
    assert "no area" in scaled_box([10, 20, 0, 5], "xywh", (100, 100), (100, 100))
    assert "outside" in scaled_box([90, 0, 30, 5], "xywh", (100, 100), (100, 100))
    assert "four finite" in scaled_box([1, 2, float("nan"), 3], "xywh", (100, 100), (100, 100))


def _parquet(tmp_path, boxes):
    rows = []
    for box in boxes:
        buf = io.BytesIO()
        Image.fromarray(np.full((60, 80, 3), 128, np.uint8)).save(buf, format="PNG")
        rows.append({"image": {"bytes": buf.getvalue(), "path": None}, "expression": ["a cat", "the cat"], "bbox": box})
    rows.append({"image": {"bytes": b"not an image", "path": None}, "expression": ["x"], "bbox": [0, 0, 1, 1]})
    path = tmp_path / "src.parquet"
    pd.DataFrame(rows).to_parquet(path)
    return path


def test_bad_rows_fail_or_are_counted(tmp_path, capsys):
    src = _parquet(tmp_path, [[0, 0, 10, 10], [70, 0, 30, 10]])  # the second box runs past the 80 px width
    with pytest.raises(SystemExit) as stop:
        main(["grounding", "--source", str(src), "--out", str(tmp_path / "a")])
    assert stop.value.code == 2 and "outside" in capsys.readouterr().err
    argv = ["grounding", "--source", str(src), "--out", str(tmp_path / "b"), "--on-error", "skip", "--all-sentences"]
    main(argv)
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["files"]["test.parquet"]["rows"] == 2  # one good image x two sentences
    table = pd.read_parquet(tmp_path / "b" / "test.parquet")
    assert table["data_source"].unique().tolist() == ["grounding_refcoco"]
    assert '"a cat"' in table["prompt"][0][0]["content"] and '"the cat"' in table["prompt"][1][0]["content"]
