"""data_prep never writes a wrong dataset silently: mixed roots, another MedMNIST subset, stale output folders,
class folders that differ only by case or separators, and symlinked class folders."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from dp_fixtures import make_fixture, medmnist_arrays, pixels, save, write_medmnist_npz
from dp_helpers import report_of, rows, run_medmnist, run_rs

from data_prep.__main__ import run
from data_prep.report import DataPrepError

# --- a --root holding several datasets ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ucm_and_nwpu(tmp_path_factory):
    """UCM (21 x 3 images) and NWPU-RESISC45 (45 x 5) side by side: 18 NWPU class names fold onto UCM's, and NWPU has
    more images in them (90) than UCM has in all (63), so a vote by image count picks NWPU for `ucm`."""
    root = tmp_path_factory.mktemp("mixed") / "data"
    make_fixture("ucm", root)
    make_fixture("resisc45", root, n=5)
    return root


@pytest.mark.parametrize("name", ["ucm", "resisc45"])
def test_a_root_with_two_datasets_is_refused_naming_both_trees(ucm_and_nwpu, tmp_path, name):
    out = tmp_path / "out"
    with pytest.raises(DataPrepError, match=r"several") as err:
        run_rs(name, ucm_and_nwpu, out, shots=[1], on_error="skip")
    assert "UCMerced_LandUse/Images" in str(err.value) and "NWPU-RESISC45" in str(err.value)
    assert "\n" not in str(err.value) and not out.exists()


def test_pointing_at_one_tree_works_and_the_class_root_is_printed(ucm_and_nwpu, tmp_path, capsys):
    argv = ["ucm", "--root", str(ucm_and_nwpu / "UCMerced_LandUse"), "--out", str(tmp_path / "out")]
    report = run([*argv, "--shots", "1", "--workers", "0", "--no-progress"])
    assert report["class_root"] == "Images" and report["files"]["train_1shot.parquet"]["rows"] == 21
    printed = capsys.readouterr().out
    assert f"class root: {ucm_and_nwpu / 'UCMerced_LandUse' / 'Images'}" in printed
    assert "21 class folders" in printed


def test_stray_images_outside_the_class_root_are_counted_in_a_note(tmp_path):
    root = make_fixture("patternnet", tmp_path / "raw")
    save(root / "extras" / "forest" / "a.jpg", pixels(0, 0))  # one class-named folder elsewhere: not a second tree
    report = run_rs("patternnet", root, tmp_path / "out", shots=[1])
    assert report["class_root"] == "PatternNet/images"
    assert any("1 image(s) outside the class root" in n for n in report["notes"])


# --- MedMNIST: the file must be the subset the flag names ------------------------------------------------------


def test_another_subsets_npz_given_as_root_is_refused(tmp_path):
    path = write_medmnist_npz(tmp_path / "raw", "bloodmnist", n=4)
    with pytest.raises(DataPrepError, match=r"bloodmnist\.npz.*--flag pathmnist.*expected pathmnist\.npz"):
        run_medmnist("pathmnist", path, tmp_path / "out", on_error="skip")
    path64 = write_medmnist_npz(tmp_path / "raw", "pathmnist", n=4, size=64)
    with pytest.raises(DataPrepError, match=r"pathmnist_64\.npz.*--size 64"):
        run_medmnist("pathmnist", path64, tmp_path / "out", on_error="skip")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("source_flag", "flag", "side", "why"),
    [
        ("octmnist", "pathmnist", 28, r"28, 28\].*expected N x 28 x 28 x 3"),  # grey images under an RGB subset
        ("pathmnist", "octmnist", 28, r"28, 28, 3\].*expected N x 28 x 28"),  # RGB under a grey subset
        ("pathmnist", "pathmnist", 64, r"64, 64, 3\].*expected N x 28 x 28 x 3"),  # a 64 px file named as 28 px
        ("chestmnist", "pneumoniamnist", 28, r"labels.*14.*expected N x 1"),  # multi-label file, 1-label subset
        ("pathmnist", "bloodmnist", 28, r"label 8.*bloodmnist has 0\.\.7"),  # 9 classes under an 8-class subset
    ],
)
def test_a_renamed_npz_of_another_subset_is_refused_even_with_skip(tmp_path, source_flag, flag, side, why):
    arrays = medmnist_arrays(source_flag, 9, side=side)
    np.savez_compressed(tmp_path / f"{flag}.npz", **arrays)
    with pytest.raises(DataPrepError, match=why):
        run_medmnist(flag, tmp_path, tmp_path / "out", on_error="skip")


# --- an output folder holding another run's files ---------------------------------------------------------------


@pytest.fixture(scope="module")
def two_roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("two")
    return make_fixture("patternnet", base / "pn"), make_fixture("whu_rs19", base / "whu")


def _names(out):
    return sorted(p.name for p in out.iterdir())


def test_out_holding_another_dataset_seed_or_shots_is_refused(two_roots, tmp_path):
    pn, whu = two_roots
    out = tmp_path / "out"
    run_rs("patternnet", pn, out, shots=[1, 2], seed=0)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for name, root, kw in (
        ("whu_rs19", whu, {"shots": [1, 2], "seed": 0}),
        ("patternnet", pn, {"shots": [1, 2], "seed": 1}),
        ("patternnet", pn, {"shots": [4], "seed": 0}),
    ):
        with pytest.raises(DataPrepError, match=r"holds the output of another run.*patternnet.*--overwrite"):
            run_rs(name, root, out, **kw)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # untouched


def test_overwrite_clears_the_other_runs_files_and_keeps_foreign_ones(two_roots, tmp_path):
    pn, whu = two_roots
    out = tmp_path / "out"
    run_rs("patternnet", pn, out, shots=[1, 2, 4])
    (out / "NOTES.txt").write_text("mine")
    report = run_rs("whu_rs19", whu, out, shots=[1], split_ratio=(0.5, 0.0, 0.5), overwrite=True)
    assert report["dataset"] == "whu_rs19"
    assert _names(out) == ["NOTES.txt", "report.json", "splits.json", "test.parquet", "train_1shot.parquet"]
    assert (out / "NOTES.txt").read_text() == "mine"


def test_a_rerun_of_the_same_run_removes_files_it_no_longer_writes(two_roots, tmp_path):
    pn, _ = two_roots
    out = tmp_path / "out"
    run_rs("patternnet", pn, out, shots=[1], split_ratio=(0.34, 0.33, 0.33))  # 3 per class: 1/1/1, writes val
    assert "val.parquet" in _names(out)
    run_rs("patternnet", pn, out, shots=[1], split_ratio=(0.5, 0.0, 0.5))  # same dataset/seed/shots, no val split
    assert _names(out) == ["report.json", "splits.json", "test.parquet", "train_1shot.parquet"]


def test_parquet_files_without_a_report_are_refused_unless_overwrite(two_roots, tmp_path):
    pn, _ = two_roots
    out = tmp_path / "out"
    out.mkdir()
    (out / "train_8shot.parquet").write_bytes(b"PAR1 from somewhere else")
    with pytest.raises(DataPrepError, match=r"train_8shot\.parquet.*--overwrite"):
        run_rs("patternnet", pn, out, shots=[1])
    run_rs("patternnet", pn, out, shots=[1], overwrite=True)
    assert "train_8shot.parquet" not in _names(out) and json.loads((out / "report.json").read_text())


def test_cli_overwrite_flag(two_roots, tmp_path):
    pn, whu = two_roots
    out = tmp_path / "out"
    common = ["--out", str(out), "--shots", "1", "--workers", "0", "--no-progress"]
    run(["patternnet", "--root", str(pn), *common])
    report = run(["whu_rs19", "--root", str(whu), *common, "--overwrite"])
    assert report["dataset"] == "whu_rs19" and report_of(out)["dataset"] == "whu_rs19"


# --- class folders: case/separator twins, symlinks ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "twin_of", "twin"),
    [("aid", "Forest", "forest"), ("ucm", "denseresidential", "dense_residential")],
)
def test_two_folders_for_one_class_are_refused_naming_both(tmp_path, name, twin_of, twin):
    root = make_fixture(name, tmp_path / "raw", n=2)
    parent = next(p.parent for p in root.rglob(twin_of) if p.is_dir())
    for j in range(3):
        save(parent / twin / f"twin_{j}.jpg", pixels(7, j))
    rel = parent.relative_to(root).as_posix()
    with pytest.raises(DataPrepError, match="two folders") as err:
        run_rs(name, root, tmp_path / "out", shots=[1], on_error="skip")
    assert f"{rel}/{twin_of}" in str(err.value) and f"{rel}/{twin}" in str(err.value)


def test_symlinked_class_folders_are_followed_like_symlinked_files(tmp_path):
    root = make_fixture("aid", tmp_path / "raw", n=2)
    elsewhere = tmp_path / "disk2"
    elsewhere.mkdir()
    shutil.move(root / "AID" / "Forest", elsewhere / "Forest")
    os.symlink(elsewhere / "Forest", root / "AID" / "Forest", target_is_directory=True)
    os.symlink(root / "AID", root / "AID" / "Beach" / "loop", target_is_directory=True)  # a cycle: must not hang
    out = tmp_path / "out"
    report = run_rs("aid", root, out, shots=[None], split_ratio=(1.0, 0.0, 0.0), on_error="skip")
    assert report["files"]["train_all.parquet"]["per_class"]["Forest"] == 2
    assert report["skipped"]["by_reason"].get("missing_class_folder") is None
    paths = {r["extra_info"]["source_path"] for r in rows(out / "train_all.parquet")}
    assert "AID/Forest/forest_1.jpg" in paths
