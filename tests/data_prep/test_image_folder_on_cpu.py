"""Issue 20, point 5: user data without code -- `python -m data_prep folder` (one folder per class -> the
classification schema, with the converters' checks) and multiple-choice sets with more than 8 options."""

from __future__ import annotations

import io
import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dp_fixtures import pixels, save, zip_tree
from dp_helpers import assert_one_line_error, cli, no_junk, report_of, rows
from PIL import Image

from data_prep.__main__ import run
from data_prep.schema import ARROW_SCHEMA

CLASSES = ("Cats", "dogs", "red_cars")


@pytest.fixture
def my_set(tmp_path):
    """3 classes x 5 images, a README beside them, a Thumbs.db inside one class folder."""
    root = tmp_path / "my_set"
    for c, name in enumerate(CLASSES):
        for j in range(5):
            save(root / name / f"img{j}.png", pixels(c, j))
    (root / "README.txt").write_text("my classes\n")
    (root / "dogs" / "Thumbs.db").write_bytes(b"\0" * 10)
    return root


def _argv(root, out, *extra):
    return ["folder", "--root", str(root), "--out", str(out), "--name", "my_set", "--shots", "1,2", *extra]


def test_a_class_per_folder_set_becomes_the_classification_schema(my_set, tmp_path, capsys):
    out = tmp_path / "out"
    extra = ["--subject", "a photo of a thing", "--transforms", "hflip", "--no-progress", "--workers", "0"]
    report = run(_argv(my_set, out, *extra))
    assert report["class_names"] == list(CLASSES) and report["transforms"] == ["identity", "hflip"]
    assert report["ignored_files"]["examples"] == ["README.txt", "dogs/Thumbs.db"] and report[
        "split_source"
    ].startswith("seeded")
    train = rows(out / "train_2shot.parquet")
    assert len(train) == 6 and pq.read_schema(out / "train_2shot.parquet").equals(ARROW_SCHEMA)
    first = train[0]
    assert first["data_source"] == "my_set" and first["extra_info"]["domain"] == "general"
    assert first["reward_model"]["ground_truth"] in CLASSES
    assert first["extra_info"]["class_names"] == list(CLASSES) and first["extra_info"]["transforms"] == [
        "identity",
        "hflip",
    ]
    prompt = first["prompt"][0]["content"]
    assert prompt.startswith("<image>This image is a photo of a thing.") and "- red_cars" in prompt
    assert json.loads((out / "splits.json").read_text())["train"]
    assert "class root" in capsys.readouterr().out


def test_a_zip_of_the_set_with_its_top_folder_gives_the_same_rows(my_set, tmp_path):
    run(_argv(my_set, tmp_path / "a", "--no-progress", "--workers", "0"))
    archive = zip_tree(my_set, tmp_path / "my_set.zip")
    run(_argv(archive, tmp_path / "b", "--no-progress", "--workers", "0"))
    a, b = rows(tmp_path / "a" / "test.parquet"), rows(tmp_path / "b" / "test.parquet")
    assert [r["images"][0]["bytes"] for r in a] == [r["images"][0]["bytes"] for r in b]
    assert [r["reward_model"] for r in a] == [r["reward_model"] for r in b]
    assert b[0]["extra_info"]["source_path"] == "my_set/" + a[0]["extra_info"]["source_path"]


def test_folders_differing_only_by_case_are_refused_naming_both(my_set, tmp_path, capsys):
    save(my_set / "cats" / "x.png", pixels(9, 9))
    code, _, err = cli(_argv(my_set, tmp_path / "out"), capsys)
    assert_one_line_error(code, err, "Cats and cats", "merge them")
    assert no_junk(tmp_path / "out")


def test_bad_images_fail_or_are_counted_like_the_other_converters(my_set, tmp_path, capsys):
    (my_set / "dogs" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (my_set / "empty_class").mkdir()
    save(my_set / "dogs" / "deeper" / "x.png", pixels(1, 9))
    code, _, err = cli(_argv(my_set, tmp_path / "a"), capsys)
    assert_one_line_error(code, err, "file_outside_class_folder", "dogs/deeper/x.png")
    code, _, err = cli(_argv(my_set, tmp_path / "b", "--on-error", "skip", "--shots", "all"), capsys)
    assert code == 0, err
    skipped = report_of(tmp_path / "b")["skipped"]["by_reason"]
    assert skipped == {"corrupt_image": 1, "empty_class_folder": 1, "file_outside_class_folder": 1}


def test_the_same_image_under_two_classes_is_refused(my_set, tmp_path, capsys):
    shutil.copy(my_set / "dogs" / "img0.png", my_set / "Cats" / "copy.png")
    code, _, err = cli(_argv(my_set, tmp_path / "out"), capsys)
    assert_one_line_error(code, err, "byte-identical", "Cats/copy.png", "dogs/img0.png")


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--name", "ucm"], "built-in dataset"),
        (["--name", "My Set"], "lower-case"),
        (["--prompt", "injection"], "--prompt injection"),
        (["--transforms", "rot45"], "unknown transform"),
    ],
)
def test_options_that_cannot_hold_are_one_line(my_set, tmp_path, capsys, extra, needle):
    code, _, err = cli([*_argv(my_set, tmp_path / "out"), *extra], capsys)
    assert_one_line_error(code, err, needle)


def test_a_single_class_folder_is_refused(tmp_path, capsys):
    save(tmp_path / "one" / "only" / "a.png", pixels(0, 0))
    save(tmp_path / "one" / "only" / "b.png", pixels(0, 1))
    (tmp_path / "one" / "notes.txt").write_text("x")
    code, _, err = cli(_argv(tmp_path / "one", tmp_path / "out"), capsys)
    assert_one_line_error(code, err, "at least two")


# --- multiple choice with more than 8 options ----------------------------------------------------------------------


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(buf, format="PNG")
    return buf.getvalue()


def test_multiple_choice_with_ten_option_columns(tmp_path):
    letters = "ABCDEFGHIJ"
    table = pa.table(
        {
            "question": ["Which number is shown?", "Which one?"],
            "answer": ["J", "I"],
            "image": [{"bytes": _png(), "path": None}] * 2,
            **{c: [f"option {c}", f"choice {c}"] for c in letters},
        }
    )
    pq.write_table(table, tmp_path / "mc.parquet")
    report = run(["mcq", "--source", str(tmp_path / "mc.parquet"), "--out", str(tmp_path / "o"), "--name", "mc10"])
    out = rows(tmp_path / "o" / "test.parquet")
    assert report["files"]["test.parquet"]["rows"] == 2 and report["skipped"]["total"] == 0
    assert out[0]["extra_info"]["class_names"] == list(letters)
    assert [r["reward_model"]["ground_truth"] for r in out] == ["J", "I"]
    assert (
        "J. option J" in out[0]["prompt"][0]["content"]
        and "(A, B, C, D, E, F, G, H, I, J)" in out[0]["prompt"][0]["content"]
    )


def test_multiple_choice_options_in_the_text_beyond_h(tmp_path):
    options = ", ".join(f"{c}: item {c}" for c in "ABCDEFGHIJK")
    table = pa.table(
        {
            "question": [f"Pick one. Options: {options}", "Is X: the answer? Options: A: yes, B: no"],
            "answer": ["K", "B"],
            "image": [{"bytes": _png(), "path": None}] * 2,
        }
    )
    pq.write_table(table, tmp_path / "mc.parquet")
    run(["mcq", "--source", str(tmp_path / "mc.parquet"), "--out", str(tmp_path / "o")])
    out = rows(tmp_path / "o" / "test.parquet")
    assert out[0]["extra_info"]["class_names"] == list("ABCDEFGHIJK")
    assert out[1]["extra_info"]["class_names"] == ["A", "B"]  # a stray "X:" is not an option
