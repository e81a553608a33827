"""Issue 18, point 1: no wrong dataset is written with exit 0 -- a single tree of another dataset, two copies of an
npz, two runs on one --out, 48-bit TIFF values, and byte-identical images under two labels or splits."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from dp_fixtures import make_fixture, pixels, save, write_medmnist_npz
from dp_helpers import assert_one_line_error, cli, image_of, report_of, rows, run_medmnist, run_rs
from PIL import Image

from data_prep.images import encode_image_bytes
from data_prep.report import DataPrepError
from data_prep.writer import OutputDir

REPO = Path(__file__).resolve().parents[2]

# --- a single tree of another dataset ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tree", "asked"),
    [
        ("resisc45", "ucm"),  # 18 of NWPU's 45 folder names fold onto UCM classes
        ("ucm", "resisc45"),  # 18 of UCM's 21 fold onto NWPU classes: more than half, but UCM names all 21
        ("aid", "whu_rs19"),  # 17 of AID's 30 are WHU-RS19 classes
        ("whu_rs19", "aid"),  # 17 of WHU-RS19's 19 are AID classes
    ],
)
def test_a_tree_of_another_dataset_is_refused_naming_it(tmp_path, capsys, tree, asked):
    root = make_fixture(tree, tmp_path / "raw", n=1)
    out = tmp_path / "out"
    code, _, err = cli([asked, "--root", str(root), "--out", str(out), "--on-error", "skip"], capsys)
    assert_one_line_error(code, err, f"looks like {tree}, not {asked}", f"python -m data_prep {tree}")
    assert not out.exists()


def test_a_tree_of_unknown_folders_is_refused_pointing_at_the_folder_command(tmp_path):
    root = tmp_path / "raw"
    for name in ("forest", "cats", "dogs", "cars"):  # 1 of 4 is a UCM class
        save(root / name / "a.jpg", pixels(0, len(name)))
    with pytest.raises(DataPrepError, match=r"only 1 of its 4 class folders.*data_prep folder"):
        run_rs("ucm", root, tmp_path / "out", on_error="skip")


def test_a_partial_copy_of_the_right_dataset_still_converts(tmp_path):
    root = make_fixture("aid", tmp_path / "raw", n=2)
    for extra in sorted((root / "AID").iterdir())[5:]:  # keep 5 of the 30 classes
        shutil.rmtree(extra)
    report = run_rs("aid", root, tmp_path / "out", shots=[1], on_error="skip")
    assert report["files"]["train_1shot.parquet"]["rows"] == 5


# --- two copies of an npz ------------------------------------------------------------------------------------------


def test_two_copies_of_the_npz_under_root_are_refused_listing_both(tmp_path):
    write_medmnist_npz(tmp_path / "raw", "pathmnist", n=4)
    write_medmnist_npz(tmp_path / "raw" / "a_old", "pathmnist", n=3, seed=1)
    with pytest.raises(DataPrepError, match=r"2 copies of pathmnist\.npz") as err:
        run_medmnist("pathmnist", tmp_path / "raw", tmp_path / "out", on_error="skip")
    assert "a_old/pathmnist.npz" in str(err.value) and str(tmp_path / "raw" / "pathmnist.npz") in str(err.value)


# --- two runs on one --out ------------------------------------------------------------------------------------------


def test_a_second_run_on_a_locked_out_fails_at_once_naming_the_first(tmp_path):
    out = tmp_path / "out"
    holder = OutputDir(out)  # what a running conversion holds
    try:
        root = make_fixture("patternnet", tmp_path / "raw", n=1)
        with pytest.raises(DataPrepError, match=r"in use by another data_prep run \(pid \d+"):
            run_rs("patternnet", root, out, shots=[1])
        assert not (out / "report.json").exists()
    finally:
        holder.abort()
    assert not out.exists()  # the holder made it, and removed it


def test_a_second_cli_run_while_the_first_is_writing_fails_at_once(tmp_path):
    """Run A blocks reading one image (a `sitecustomize` hangs that read), run B targets the same --out: B exits 2
    naming A's pid, and after A is stopped --out holds nothing of either."""
    root = make_fixture("patternnet", tmp_path / "raw", n=2)
    out = tmp_path / "out"
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import time\nimport data_prep.source as source\n_read = source.read_ref\n"
        "def read_ref(ref):\n    if ref.member.endswith('forest001.jpg'):\n        time.sleep(3600)\n"
        "    return _read(ref)\nsource.read_ref = read_ref\n"
    )
    base = [sys.executable, "-m", "data_prep", "patternnet", "--root", str(root), "--out", str(out), "--no-progress"]
    first = subprocess.Popen(
        [*base, "--workers", "0"], cwd=REPO, env={**os.environ, "PYTHONPATH": f"{site}:{REPO}"}, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list(out.glob(".data_prep-tmp-*")):
            time.sleep(0.05)
        time.sleep(1.0)  # A is indexing or blocked in its read
        second = subprocess.run([*base, "--seed", "1", "--workers", "0"], cwd=REPO, capture_output=True, timeout=60)
        err = second.stderr.decode()
        assert second.returncode == 2 and f"pid {first.pid}" in err and "in use by another" in err, err
        assert first.poll() is None  # A is untouched
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)
    assert first.returncode == 143 and not out.exists()


# --- 48-bit TIFF ---------------------------------------------------------------------------------------------------


def tiff48(arr: np.ndarray) -> bytes:
    """An uncompressed little-endian RGB TIFF with 16 bits per sample (one strip)."""
    h, w, _ = arr.shape
    data = arr.astype("<u2").tobytes()
    n, ifd = 10, 8
    bps_at = ifd + 2 + n * 12 + 4
    data_at = bps_at + 6
    entries = [(256, 3, 1, w), (257, 3, 1, h), (258, 3, 3, bps_at), (259, 3, 1, 1), (262, 3, 1, 2)]
    entries += [(273, 4, 1, data_at), (277, 3, 1, 3), (278, 3, 1, h), (279, 4, 1, len(data)), (284, 3, 1, 1)]
    out = b"II*\x00" + struct.pack("<I", ifd) + struct.pack("<H", n)
    for tag, typ, count, val in entries:
        out += (
            struct.pack("<HHIHH", tag, typ, count, val, 0)
            if typ == 3 and count == 1
            else struct.pack("<HHII", tag, typ, count, val)
        )
    return out + b"\0\0\0\0" + struct.pack("<HHH", 16, 16, 16) + data


def test_48_bit_tiff_is_mapped_by_the_readme_formula_and_counted():
    arr = np.random.default_rng(0).integers(0, 65536, size=(128, 128, 3), dtype=np.uint16)
    arr[0, 0] = (0, 65535, 128)  # 0 -> 0, 65535 -> 255, 128 * 255 / 65535 = 0.498 -> 0 (truncation: 128 >> 8 = 0)
    arr[0, 1] = (32896, 32768, 384)  # 128.0 -> 128; 127.5 -> 128 (rounded; truncation 128); 1.49 -> 1 (trunc 1)
    arr[0, 2] = (33023, 257, 65279)  # 128.5 -> 128 ((v*255+32767)//65535), 1 -> 1, 254.0 -> 254 (trunc 254)
    arr[0, 3] = (32895, 32767, 65407)  # 127.996 -> 128 (trunc 128); 127.496 -> 127 (trunc 127); 254.5 -> 254
    enc = encode_image_bytes(tiff48(arr), 56)
    assert enc.conversions == ("16bit->rgb", "tiff->png")
    got = np.asarray(Image.open(io.BytesIO(enc.data)))
    want = ((arr.astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8)
    assert (got == want).all()
    assert (got != (arr >> 8)).sum() > 1000  # truncation differs: the old code's output is not this one


def test_compressed_48_bit_tiff_is_an_unsupported_image_not_a_truncated_one():
    data = bytearray(tiff48(np.full((64, 64, 3), 1000, dtype=np.uint16)))
    at = data.index(struct.pack("<HHI", 259, 3, 1))
    data[at + 8 : at + 10] = struct.pack("<H", 32773)  # PackBits
    enc = encode_image_bytes(bytes(data), 56)
    assert enc.data is None and enc.error_kind in ("unsupported_image", "corrupt_image")


# --- byte-identical images ------------------------------------------------------------------------------------------


@pytest.fixture
def pn_with_copies(tmp_path):
    """PatternNet (38 classes x 5) with three copies of one airplane image inside `airplane/` and one under `beach/`
    renamed, so some exact duplicates share a label and one crosses labels."""
    root = make_fixture("patternnet", tmp_path / "raw", n=5)
    images = root / "PatternNet" / "images"
    src = images / "airplane" / "airplane001.jpg"
    for j in (1, 2, 3):
        shutil.copy(src, images / "airplane" / f"copy{j}.jpg")
    return root, src, images


def test_copies_under_two_labels_are_refused_naming_both(pn_with_copies, tmp_path, capsys):
    root, src, images = pn_with_copies
    shutil.copy(src, images / "beach" / "beach999.jpg")
    out = tmp_path / "out"
    code, _, err = cli(["patternnet", "--root", str(root), "--out", str(out), "--on-error", "skip"], capsys)
    assert_one_line_error(code, err, "byte-identical", "airplane001.jpg", "beach999.jpg", "--duplicates")
    report = run_rs("patternnet", root, out, on_error="skip", duplicates="drop", shots=[1])
    assert report["skipped"]["by_reason"]["duplicate_image"] == 5  # 4 airplane copies + 1 beach: the group dropped
    assert report["duplicates"]["across_labels"] == 1


def test_copies_under_one_label_land_in_one_split_and_are_reported(pn_with_copies, tmp_path):
    root, _, _ = pn_with_copies
    report = run_rs("patternnet", root, tmp_path / "out", shots=[1], split_ratio=(0.4, 0.3, 0.3))
    assert report["duplicates"]["groups"] == 1 and report["duplicates"]["images"] == 4
    splits = json.loads((tmp_path / "out" / "splits.json").read_text())
    where = {s for s, paths in splits.items() for p in paths if "airplane/copy" in p or p.endswith("airplane001.jpg")}
    assert len(where) == 1, splits
    assert any("byte-identical" in n for n in report["notes"])


def test_drop_keeps_one_copy(pn_with_copies, tmp_path):
    root, _, _ = pn_with_copies
    report = run_rs("patternnet", root, tmp_path / "out", shots=[None], duplicates="drop")
    assert report["skipped"]["by_reason"]["duplicate_image"] == 3
    total = sum(report["splits"][s]["total"] for s in report["splits"])
    assert total == 38 * 5 + 3 - 3


def test_copies_across_official_splits_are_a_warning_and_drop_keeps_the_train_copy(tmp_path):
    root = make_fixture("ucm", tmp_path / "raw", split_files=True)  # image 00 -> test, 01 -> val, 02 -> train
    images = root / "UCMerced_LandUse" / "Images" / "forest"
    shutil.copy(images / "forest02.tif", images / "forest00.tif")  # the test image = a train image
    report = run_rs("ucm", root, tmp_path / "a", shots=[1])
    assert report["duplicates"]["across_official_splits"] == 1
    assert any("span the official splits" in w for w in report["warnings"])
    report = run_rs("ucm", root, tmp_path / "b", shots=[1], duplicates="drop")
    assert report["splits"]["test"]["per_class"]["forest"] == 0 and report["splits"]["train"]["per_class"]["forest"]


def test_identical_medmnist_rows_under_two_labels_are_refused(tmp_path):
    path = write_medmnist_npz(tmp_path / "raw", "pneumoniamnist", n=6)
    with np.load(path) as data:
        arrays = {k: data[k].copy() for k in data.files}
    arrays["test_images"][0] = arrays["train_images"][0]
    arrays["test_labels"][0] = 1 - arrays["train_labels"][0]
    np.savez_compressed(path, **arrays)
    with pytest.raises(DataPrepError, match=r"byte-identical images under different labels.*train_images\[0\]"):
        run_medmnist("pneumoniamnist", path, tmp_path / "out", shots=[1])


def test_no_duplicates_gives_the_same_split_as_before(tmp_path):
    """Grouping copies must not move anything when there are none: the seeded split is the plain stratified one."""
    root = make_fixture("patternnet", tmp_path / "raw", n=5)
    run_rs("patternnet", root, tmp_path / "out", shots=[1])
    splits = json.loads((tmp_path / "out" / "splits.json").read_text())
    assert [len(splits[s]) for s in ("train", "val", "test")] == [38 * 3, 38, 38]
    assert report_of(tmp_path / "out")["duplicates"]["groups"] == 0
    first = rows(tmp_path / "out" / "train_1shot.parquet")[0]
    assert image_of(first).shape == (64, 64, 3)
