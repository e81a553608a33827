"""`python -m data_prep digits`: scikit-learn's real 8x8 handwritten digits in the shared schema, with hand-checked
labels, pixels, class counts, split sizes, the D4 whitelist and one-line refusals."""

from __future__ import annotations

import numpy as np
import pytest
from dp_helpers import assert_one_line_error, cli, file_bytes, image_of, report_of, rows

from data_prep import digits
from data_prep.schema import COLUMNS
from data_prep.whitelist import ALL
from verl_ext.rewards import compute_score
from verl_ext.transforms import DIHEDRAL_NAMES


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits") / "out"
    code = cli_module(["digits", "--out", str(out)])
    assert code == 0
    return out


def cli_module(argv: list[str]) -> int:
    from data_prep.__main__ import main

    try:
        main([*argv, "--workers", "0", "--no-progress"])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def by_source(out) -> dict[str, dict]:
    return {r["extra_info"]["source_path"]: r for name in ("train", "test") for r in rows(out / f"{name}.parquet")}


def test_ink_to_grey_by_hand():
    # v * 255 / 16 rounded half up: 0 -> 0, 1 -> 15.94 -> 16, 8 -> 127.5 -> 128, 15 -> 239.06 -> 239, 16 -> 255
    got = digits.to_uint8(np.array([[[0, 1, 8, 15, 16]]]))
    assert got.tolist() == [[[0, 16, 128, 239, 255]]]


def test_known_digits_label_and_pixels(converted):
    found = by_source(converted)
    images, targets = digits.load_source()
    assert targets[:10].tolist() == list(range(10))  # load_digits starts with one of each digit, 0..9 in order
    zero, one = found["sklearn:digits[0]"], found["sklearn:digits[1]"]
    assert zero["reward_model"]["ground_truth"] == "0" and zero["extra_info"]["label_id"] == 0
    assert one["reward_model"]["ground_truth"] == "1" and one["extra_info"]["label_id"] == 1
    assert found["sklearn:digits[3]"]["reward_model"]["ground_truth"] == "3"
    assert found["sklearn:digits[3]"]["extra_info"]["label_id"] == 2  # "3" is the third kept class (0, 1, 3)
    for left_out in (2, 5, 6, 9):  # digits[k] is the digit k for k < 10
        assert f"sklearn:digits[{left_out}]" not in found
    # the image: 8x8 grey, nearest-neighbour x7 (each pixel a 7x7 block), the same value in R, G and B, upright
    expected = np.kron(digits.to_uint8(images[:1])[0], np.ones((7, 7), dtype=np.uint8))  # [56, 56]
    pixels = image_of(zero)
    assert pixels.shape == (56, 56, 3)
    for channel in range(3):
        np.testing.assert_array_equal(pixels[:, :, channel], expected)


def test_class_counts_and_split_sizes(converted):
    report = report_of(converted)
    # load_digits per digit: 0:178 1:182 3:183 4:181 7:179 8:174 (total 1077 of 1797)
    # train = floor(n * 0.7 + 0.5): 124.6 -> 125, 127.4 -> 127, 128.1 -> 128, 126.7 -> 127, 125.3 -> 125, 121.8 -> 122
    assert report["splits"]["train"]["per_class"] == {"0": 125, "1": 127, "3": 128, "4": 127, "7": 125, "8": 122}
    assert report["files"]["train.parquet"]["rows"] == 754 and report["files"]["test.parquet"]["rows"] == 1077 - 754
    assert report["class_names"] == ["0", "1", "3", "4", "7", "8"]
    assert report["left_out"] == [2, 5, 6, 9]
    train = {r["extra_info"]["index"] for r in rows(converted / "train.parquet")}
    test = {r["extra_info"]["index"] for r in rows(converted / "test.parquet")}
    assert not train & test


def test_rows_follow_the_schema_whitelist_and_reward(converted):
    for row in rows(converted / "train.parquet")[:20] + rows(converted / "test.parquet")[:20]:
        assert tuple(row) == COLUMNS
        info = row["extra_info"]
        assert info["transforms"] == list(ALL) == list(DIHEDRAL_NAMES)  # the square's 8 symmetries, registry order
        assert info["class_names"] == ["0", "1", "3", "4", "7", "8"] and info["multi_label"] is False
        assert row["data_source"] == "digits" and info["domain"] == "general"
        text = row["prompt"][0]["content"]
        assert text.startswith("<image>") and "- 0\n- 1\n- 3\n- 4\n- 7\n- 8\n" in text and "<answer>" in text
        truth = row["reward_model"]["ground_truth"]
        right = compute_score(row["data_source"], f"<think></think><answer>{truth}</answer>", truth, info)
        assert right["score"] == 2.0  # acc 1 + format 1
        wrong = "8" if truth != "8" else "0"
        assert compute_score(row["data_source"], f"<think></think><answer>{wrong}</answer>", truth, info)["acc"] == 0
        # a left-out digit is no class of the vocabulary: acc 0, answer not valid
        six = compute_score(row["data_source"], "<think></think><answer>6</answer>", truth, info)
        assert six["acc"] == 0 and six["answer_valid"] == 0


def test_same_seed_same_bytes_other_seed_other_split(tmp_path):
    assert cli_module(["digits", "--out", str(tmp_path / "a")]) == 0
    assert cli_module(["digits", "--out", str(tmp_path / "b")]) == 0
    assert cli_module(["digits", "--out", str(tmp_path / "c"), "--seed", "1"]) == 0
    a, b = file_bytes(tmp_path / "a"), file_bytes(tmp_path / "b")
    assert a == b
    test_a = {r["extra_info"]["index"] for r in rows(tmp_path / "a" / "test.parquet")}
    test_c = {r["extra_info"]["index"] for r in rows(tmp_path / "c" / "test.parquet")}
    assert len(test_a) == len(test_c) == 323 and test_a != test_c


def test_classes_option(tmp_path):
    out = tmp_path / "three"
    assert cli_module(["digits", "--out", str(out), "--classes", "7,1,0,1"]) == 0
    report = report_of(out)
    assert report["class_names"] == ["0", "1", "7"]  # sorted, duplicates removed
    assert report["splits"]["train"]["per_class"] == {"0": 125, "1": 127, "7": 125}


@pytest.mark.parametrize(
    "classes, needle",
    [
        ("6,9", "6 and 9 turn into each other"),
        ("0,2,5", "2 and 5 turn into each other"),
        ("3", "at least two digits"),
        ("1,x", "digits 0-9"),
        ("10,1", "digits 0-9"),
        ("", "digits 0-9"),
    ],
)
def test_bad_classes_refused_in_one_line(tmp_path, capsys, classes, needle):
    code, _, err = cli(["digits", "--out", str(tmp_path / "x"), "--classes", classes], capsys)
    assert_one_line_error(code, err, "--classes", needle)
    assert not (tmp_path / "x").exists()


def test_injection_prompt_refused_in_one_line(tmp_path, capsys):
    code, _, err = cli(["digits", "--out", str(tmp_path / "x"), "--prompt", "injection"], capsys)
    assert_one_line_error(code, err, "--prompt injection", "digits")
