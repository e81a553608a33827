"""`--on-error skip|fail` for every kind of bad input, atomic output, and byte-identical reruns."""

from __future__ import annotations

import shutil

import pytest
from dp_fixtures import add_bad_images, make_fixture, pixels, save
from dp_helpers import file_bytes, report_of, rows, run_rs

from data_prep.report import DataPrepError


@pytest.fixture(scope="module")
def resisc_root(tmp_path_factory):
    return make_fixture("resisc45", tmp_path_factory.mktemp("resisc") / "raw")


def _copy(root, tmp_path):
    return shutil.copytree(root, tmp_path / "raw")


def test_bad_images_fail_with_the_path_and_leave_no_output(resisc_root, tmp_path):
    root = _copy(resisc_root, tmp_path)
    add_bad_images(root / "NWPU-RESISC45" / "airport")
    out = tmp_path / "out"
    with pytest.raises(DataPrepError, match=r"zz_(corrupt|truncated)\.jpg"):
        run_rs("resisc45", root, out, shots=[None])
    assert not out.exists()  # temp folder (and the --out folder this run created) removed, nothing half-written


def test_bad_images_skip_counts_and_odd_modes_are_converted(resisc_root, tmp_path):
    root = _copy(resisc_root, tmp_path)
    add_bad_images(root / "NWPU-RESISC45" / "airport")
    out = tmp_path / "out"
    report = run_rs("resisc45", root, out, shots=[None], on_error="skip")
    assert report["skipped"]["by_reason"] == {"corrupt_image": 2}
    assert {e["path"].rsplit("/", 1)[1] for e in report["skipped"]["examples"]} == {
        "zz_corrupt.jpg",
        "zz_truncated.jpg",
    }
    assert report["converted"] == {"16bit->rgb": 1, "cmyk->rgb": 1, "grayscale->rgb": 1, "palette->rgb": 1}
    written = [r for f in ("train_all", "val", "test") for r in rows(out / f"{f}.parquet")]
    assert len(written) == 45 * 3 + 4 and sum(f["rows"] for f in report["files"].values()) == 45 * 3 + 4
    assert sum(report["splits"][s]["total"] for s in ("train", "val", "test")) == 45 * 3 + 6  # pools before decoding


def test_corrupt_image_in_a_k_shot_pick_is_replaced_by_the_next_one(resisc_root, tmp_path):
    root = _copy(resisc_root, tmp_path)
    folder = root / "NWPU-RESISC45" / "beach"
    for j in range(1, 4):  # 2 of the 3 beach images corrupt: the 1-shot set must still hold the good one
        if j != 2:
            (folder / f"beach_{j:03d}.jpg").write_bytes(b"garbage")
    out = tmp_path / "out"
    report = run_rs("resisc45", root, out, shots=[1, 2], on_error="skip", split_ratio=(1.0, 0.0, 0.0))
    one = [r for r in rows(out / "train_1shot.parquet") if r["reward_model"]["ground_truth"] == "beach"]
    assert [r["extra_info"]["source_path"] for r in one] == ["NWPU-RESISC45/beach/beach_002.jpg"]
    assert report["files"]["train_2shot.parquet"]["per_class"]["beach"] == 1
    assert report["skipped"]["by_reason"] == {"corrupt_image": 2}
    assert any("fewer than 2 usable images" in n and "beach" in n for n in report["warnings"])  # printed by the CLI


@pytest.mark.parametrize(
    ("damage", "reason", "count"),
    [
        ("unknown", "unknown_class_folder", 2),
        ("empty", "empty_class_folder", 1),
        ("missing", "missing_class_folder", 1),
        ("outside", "file_outside_class_folder", 1),
    ],
)
def test_folder_problems(resisc_root, tmp_path, damage, reason, count):
    root = _copy(resisc_root, tmp_path)
    base = root / "NWPU-RESISC45"
    if damage == "unknown":
        for j in range(2):
            save(base / "volcano" / f"volcano_{j}.jpg", pixels(0, j))
    elif damage == "empty":
        for p in (base / "wetland").iterdir():
            p.unlink()
    elif damage == "missing":
        shutil.rmtree(base / "wetland")
    else:
        save(base / "wetland" / "nested" / "x.jpg", pixels(0, 0))
    (base / "airport" / "Thumbs.db").write_bytes(b"\0")
    with pytest.raises(DataPrepError, match=rf"\[{reason}\]"):
        run_rs("resisc45", root, tmp_path / "fail", shots=[1])
    report = run_rs("resisc45", root, tmp_path / "out", shots=[1], on_error="skip")
    assert report["skipped"]["by_reason"] == {reason: count}
    assert report["ignored_files"] == {"total": 1, "examples": ["NWPU-RESISC45/airport/Thumbs.db"]}


def test_same_seed_gives_byte_identical_files_any_worker_count(resisc_root, tmp_path):
    kw = dict(shots=[1, 2, None], seed=3, eval_per_class=2)
    run_rs("resisc45", resisc_root, tmp_path / "a", **kw)
    run_rs("resisc45", resisc_root, tmp_path / "b", **kw)
    run_rs("resisc45", resisc_root, tmp_path / "c", workers=2, row_group_rows=7, **kw)
    a, b, c = (file_bytes(tmp_path / x) for x in "abc")
    assert set(a) == {"train_1shot.parquet", "train_2shot.parquet", "train_all.parquet", "test.parquet"} | {
        "splits.json",
        "report.json",
    }
    assert a == b
    assert {k: v for k, v in a.items() if k in ("splits.json", "report.json")} == {
        k: v for k, v in c.items() if k in ("splits.json", "report.json")
    }
    for name in ("train_1shot.parquet", "train_all.parquet"):
        assert rows(tmp_path / "a" / name) == rows(tmp_path / "c" / name)  # row groups differ, rows do not
    run_rs("resisc45", resisc_root, tmp_path / "d", **{**kw, "seed": 4})
    picks = lambda d: [r["extra_info"]["source_path"] for r in rows(tmp_path / d / "train_1shot.parquet")]  # noqa: E731
    assert picks("a") != picks("d")


def test_eval_cap_limits_test_per_class(resisc_root, tmp_path):
    out = tmp_path / "out"
    report = run_rs("resisc45", resisc_root, out, shots=[1], split_ratio=(0.34, 0.0, 0.66), eval_per_class=1)
    assert report["splits"]["test"]["total"] == 90 and len(rows(out / "test.parquet")) == 45
    assert report_of(out)["files"]["test.parquet"]["per_class"]["wetland"] == 1


def test_injection_variant_is_recorded_in_rows(resisc_root, tmp_path):
    run_rs("resisc45", resisc_root, tmp_path / "out", shots=[1], prompt_variant="injection")
    row = rows(tmp_path / "out" / "train_1shot.parquet")[0]
    assert row["extra_info"]["prompt_variant"] == "injection"
    assert "Domain knowledge:" in row["prompt"][0]["content"] and row["prompt"][0]["content"].startswith("<image>")


def test_fast_verify_gives_the_same_rows_for_clean_jpegs_and_still_skips_truncated(resisc_root, tmp_path):
    run_rs("resisc45", resisc_root, tmp_path / "full", shots=[None])
    run_rs("resisc45", resisc_root, tmp_path / "fast", shots=[None], verify="fast")
    for name in ("train_all.parquet", "test.parquet"):
        assert (tmp_path / "full" / name).read_bytes() == (tmp_path / "fast" / name).read_bytes()
    root = _copy(resisc_root, tmp_path)
    add_bad_images(root / "NWPU-RESISC45" / "airport")
    report = run_rs("resisc45", root, tmp_path / "out", shots=[None], verify="fast", on_error="skip")
    assert report["skipped"]["by_reason"] == {"corrupt_image": 2} and report["verify"] == "fast"
    assert report["converted"] == {"16bit->rgb": 1, "cmyk->rgb": 1, "grayscale->rgb": 1, "palette->rgb": 1}
