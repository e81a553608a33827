"""Remote-sensing converters on fixtures in each official layout, with the datasets' quirks."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest
from dp_fixtures import RSICD_NAME_ONLY, RSICD_NUMERIC, RSICD_UNLISTED, make_fixture, zip_tree
from dp_helpers import MODULES, file_bytes, image_of, report_of, rows, run_rs

from data_prep.folders import fold
from data_prep.report import DataPrepError
from data_prep.whitelist import ALL

FOLDER_SETS = ["ucm", "aid", "whu_rs19", "patternnet", "resisc45"]


def _folder_class(row: dict, names) -> str:
    folder = PurePosixPath(row["extra_info"]["source_path"]).parent.name
    return next(n for n in names if fold(n) == fold(folder))


@pytest.mark.parametrize("name", FOLDER_SETS)
def test_folder_dataset_converts_with_folder_labels_and_nested_shots(tmp_path, name):
    root = make_fixture(name, tmp_path / "raw")
    out = tmp_path / "out"
    report = run_rs(name, root, out, shots=[1, 2], split_ratio=(0.6, 0.2, 0.2))
    names = list(MODULES[name].CLASS_NAMES)
    one, two, test = rows(out / "train_1shot.parquet"), rows(out / "train_2shot.parquet"), rows(out / "test.parquet")
    assert len(one) == len(names) and len(two) == 2 * len(names) and len(test) == len(names)  # 3/class: 2 train 1 test
    assert {r["extra_info"]["source_path"] for r in one} < {r["extra_info"]["source_path"] for r in two}
    for row in one + two + test:
        truth = _folder_class(row, names)
        info = row["extra_info"]
        assert row["data_source"] == name and row["reward_model"]["ground_truth"] == truth
        assert info["label_id"] == names.index(truth) and info["class_names"] == names
        assert info["transforms"] == list(ALL) and info["prompt_variant"] == "plain"
        assert row["images"][0]["path"] == info["source_path"]
        assert abs(int(image_of(row)[5, 5, 0]) - (names.index(truth) * 11) % 256) <= 6  # fixture colour = class
    assert report["split_source"].startswith("seeded stratified split 0.6/0.2/0.2")
    assert report["skipped"]["total"] == 0 and (out / "splits.json").exists()
    assert report["files"]["train_1shot.parquet"]["per_class"] == {n: 1 for n in names}


def test_ucm_off_size_tiff_kept_at_its_size_as_png(tmp_path):
    out = tmp_path / "out"
    report = run_rs("ucm", make_fixture("ucm", tmp_path / "raw"), out, shots=[None])
    assert report["source_image_sizes"] == {"256x247": 1, "64x64": 62}
    assert report["converted"] == {"tiff->png": 63}
    off = [
        r
        for r in rows(out / "train_all.parquet") + rows(out / "test.parquet")
        if r["images"][0]["bytes"][:4] == b"\x89PNG"
    ]
    assert len(off) == 63 and any(image_of(r).shape == (247, 256, 3) for r in off)


def test_ucm_uses_torchgeo_split_files_when_present(tmp_path):
    root = make_fixture("ucm", tmp_path / "raw", split_files=True)
    out = tmp_path / "out"
    report = run_rs("ucm", root, out, shots=[1])
    assert report["split_source"] == "split files uc_merced-train.txt, uc_merced-val.txt, uc_merced-test.txt"
    test = rows(out / "test.parquet")
    assert len(test) == 21 and all(r["extra_info"]["source_path"].endswith("00.tif") for r in test)
    assert all(r["extra_info"]["source_path"].endswith("01.tif") for r in rows(out / "val.parquet"))
    assert not (out / "splits.json").exists()
    nofiles = run_rs("ucm", root, tmp_path / "out2", shots=[1], use_split_files=False)
    assert nofiles["split_source"].startswith("seeded")


def test_resisc45_split_files_and_official_zip_give_identical_bytes(tmp_path):
    folder = make_fixture("resisc45", tmp_path / "raw", split_files=True)
    archived = tmp_path / "zipped"
    archived.mkdir()
    zip_tree(folder / "NWPU-RESISC45", archived / "NWPU-RESISC45.zip")
    for split in ("train", "val", "test"):
        (archived / f"resisc45-{split}.txt").write_bytes((folder / f"resisc45-{split}.txt").read_bytes())
    run_rs("resisc45", folder, tmp_path / "a", shots=[1])
    run_rs("resisc45", archived, tmp_path / "b", shots=[1])
    a, b = file_bytes(tmp_path / "a"), file_bytes(tmp_path / "b")
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a if k != "report.json")
    assert report_of(tmp_path / "a")["files"] == report_of(tmp_path / "b")["files"]


def test_ucm_zip_given_directly_as_root(tmp_path):
    folder = make_fixture("ucm", tmp_path / "raw")
    archive = zip_tree(folder / "UCMerced_LandUse", tmp_path / "UCMerced_LandUse.zip")
    run_rs("ucm", folder, tmp_path / "a", shots=[2])
    run_rs("ucm", archive, tmp_path / "b", shots=[2])
    assert (tmp_path / "a" / "train_2shot.parquet").read_bytes() == (
        tmp_path / "b" / "train_2shot.parquet"
    ).read_bytes()


def test_whu_rs19_camel_case_folders_mixed_names_and_odd_sizes(tmp_path):
    out = tmp_path / "out"
    report = run_rs("whu_rs19", make_fixture("whu_rs19", tmp_path / "raw"), out, shots=[None])
    names = report["class_names"]
    assert names[-2:] == ["footballField", "railwayStation"] and len(names) == 19
    every = rows(out / "train_all.parquet") + rows(out / "test.parquet")
    paths = {r["extra_info"]["source_path"] for r in every}
    assert "WHU-RS19/Beach/beach-01.jpg" in paths and "WHU-RS19/Airport/airport_01.jpg" in paths
    football = [r for r in every if "footballField/" in r["extra_info"]["source_path"]]
    assert len(football) == 3 and {r["reward_model"]["ground_truth"] for r in football} == {"footballField"}
    assert report["source_image_sizes"]["600x958"] == 1 and report["source_image_sizes"]["600x600"] == 1


def test_whu_rs19_folder_spelling_variants_are_mapped_and_noted(tmp_path):
    root = make_fixture("whu_rs19", tmp_path / "raw")
    (root / "WHU-RS19" / "railwayStation").rename(root / "WHU-RS19" / "Railway_Station")
    report = run_rs("whu_rs19", root, tmp_path / "out", shots=[1])
    assert "folder 'Railway_Station' read as class 'railwayStation'" in report["notes"]


def test_rsicd_quirks_fail_then_skip(tmp_path):
    root = make_fixture("rsicd", tmp_path / "raw")
    with pytest.raises(DataPrepError, match=RSICD_UNLISTED):
        run_rs("rsicd", root, tmp_path / "fail", shots=[1])
    assert not (tmp_path / "fail" / "train_1shot.parquet").exists()
    out = tmp_path / "out"
    report = run_rs("rsicd", root, out, shots=[None], on_error="skip")
    assert report["skipped"]["by_reason"] == {"unlabeled": 1}
    assert report["split_source"] == "official (dataset_rsicd.json)" and len(report["class_names"]) == 31
    assert any("labelled from their file name" in n for n in report["notes"])
    every = {
        r["extra_info"]["source_path"].split("/")[-1]: r
        for f in ("train_all", "val", "test")
        for r in rows(out / f"{f}.parquet")
    }
    assert len(every) == 30 * 2 + len(RSICD_NUMERIC) + 1
    for name, cls in RSICD_NUMERIC.items():
        assert every[name]["reward_model"]["ground_truth"] == cls
    assert every[RSICD_NAME_ONLY]["reward_model"]["ground_truth"] == "Beach"
    assert every["airport_1.jpg"]["extra_info"]["split"] == "train"  # sorted name 0 -> train in the fixture json
    assert (
        report["splits"]["train"]["per_class"]["playfields"]
        + report["splits"]["test"]["per_class"]["playfields"]
        + report["splits"]["val"]["per_class"]["playfields"]
        == 2
    )


def test_rsicd_without_json_draws_a_seeded_split(tmp_path):
    root = make_fixture("rsicd", tmp_path / "raw", with_json=False)
    report = run_rs("rsicd", root, tmp_path / "out", shots=[1], on_error="skip")
    assert report["split_source"].startswith("seeded stratified")
