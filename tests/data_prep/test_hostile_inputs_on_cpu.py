"""Issue 18, points 2-4: corrupt side files, odd names and archives give one line (or a counted skip), never a
traceback; a SIGKILLed run leaves no process, and its temporary folder is cleared by the next run; a FIFO named like
an image does not hang; messages lead somewhere."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import psutil
import pytest
from dp_fixtures import make_fixture, medmnist_arrays, pixels, zip_tree
from dp_helpers import assert_one_line_error, cli, no_junk, report_of, run_rs
from PIL import Image

from data_prep.images import VERIFY_LEVELS, encode_image_bytes
from data_prep.report import DataPrepError

REPO = Path(__file__).resolve().parents[2]

# --- 2. no traceback ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("damage", "content"),
    [
        ("truncated", None),
        ("empty", b""),
        ("a_list", b"[]"),
        ("no_filename", json.dumps({"images": [{"split": "train"}]}).encode()),
        ("not_utf8", b'{"images": [{"filename": "\xff\xfe.jpg", "split": "train"}]}'),
    ],
)
def test_a_corrupt_rsicd_json_is_one_line(tmp_path, capsys, damage, content):
    root = make_fixture("rsicd", tmp_path / "raw")
    path = root / "dataset_rsicd.json"
    path.write_bytes(path.read_bytes()[:100] if content is None else content)
    code, _, err = cli(["rsicd", "--root", str(root), "--out", str(tmp_path / "out"), "--on-error", "skip"], capsys)
    assert_one_line_error(code, err, "dataset_rsicd.json", "--no-split-files" if damage != "not_utf8" else "UTF-8")
    assert no_junk(tmp_path / "out")


def test_a_non_utf8_class_list_or_split_file_is_one_line(tmp_path, capsys):
    root = make_fixture("rsicd", tmp_path / "rsicd")
    (root / "txtclasses_rsicd" / "forest.txt").write_bytes(b"forest_1.jpg\r\n\xe9t\xe9.jpg\r\n")
    code, _, err = cli(["rsicd", "--root", str(root), "--out", str(tmp_path / "o1")], capsys)
    assert_one_line_error(code, err, "forest.txt", "not UTF-8")
    root = make_fixture("ucm", tmp_path / "ucm", split_files=True)
    (root / "uc_merced-val.txt").write_bytes(b"forest01.tif\n\xff\n")
    code, _, err = cli(["ucm", "--root", str(root), "--out", str(tmp_path / "o2")], capsys)
    assert_one_line_error(code, err, "uc_merced-val.txt", "not UTF-8")


def test_a_file_name_that_is_not_utf8_is_named_or_counted(tmp_path, capsys):
    root = make_fixture("patternnet", tmp_path / "raw", n=1)
    folder = root / "PatternNet" / "images" / "forest"
    odd = os.path.join(os.fsencode(folder), b"for\xeat.jpg")
    with open(odd, "wb") as fh:
        fh.write((folder / "forest001.jpg").read_bytes()[:-2] + b"\xff\xd9")
    argv = ["patternnet", "--root", str(root), "--shots", "1"]
    code, _, err = cli([*argv, "--out", str(tmp_path / "a")], capsys)
    assert_one_line_error(code, err, "undecodable_file_name", "for\\xeat.jpg")
    code, _, err = cli([*argv, "--out", str(tmp_path / "b"), "--on-error", "skip"], capsys)
    assert code == 0, err
    report = report_of(tmp_path / "b")
    assert report["skipped"]["by_reason"] == {"undecodable_file_name": 1}
    assert json.loads((tmp_path / "b" / "splits.json").read_text())


def _patch_member(archive: Path, member: str, flag: int | None = None, method: int | None = None) -> None:
    """Set the general-purpose flag bits or the compression method of `member` in both of its zip headers."""
    data = bytearray(archive.read_bytes())
    name = member.encode()
    for sig, flag_at, method_at, name_at in ((b"PK\x03\x04", 6, 8, 30), (b"PK\x01\x02", 8, 10, 46)):
        at = data.find(sig)
        while at >= 0:
            if data[at + name_at : at + name_at + len(name)] == name:
                if flag is not None:
                    data[at + flag_at : at + flag_at + 2] = flag.to_bytes(2, "little")
                if method is not None:
                    data[at + method_at : at + method_at + 2] = method.to_bytes(2, "little")
            at = data.find(sig, at + 4)
    archive.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["encrypted", "method"])
def test_an_encrypted_or_unsupported_zip_member_is_one_line_or_counted(tmp_path, capsys, damage):
    root = make_fixture("patternnet", tmp_path / "raw", n=2)
    archive = zip_tree(root / "PatternNet", tmp_path / "PatternNet.zip")
    member = "PatternNet/images/forest/forest001.jpg"
    _patch_member(archive, member, **({"flag": 1} if damage == "encrypted" else {"method": 99}))
    with zipfile.ZipFile(archive) as zf, pytest.raises((RuntimeError, NotImplementedError)):
        zf.read(member)  # the damage is what zipfile refuses
    argv = ["patternnet", "--root", str(archive), "--shots", "2"]
    code, _, err = cli([*argv, "--out", str(tmp_path / "a")], capsys)
    assert_one_line_error(code, err, "unreadable_archive_member", member)
    code, _, err = cli([*argv, "--out", str(tmp_path / "b"), "--on-error", "skip"], capsys)
    assert code == 0, err
    assert report_of(tmp_path / "b")["skipped"]["by_reason"] == {"unreadable_archive_member": 1}


def test_an_npz_with_an_empty_split_converts_with_a_warning(tmp_path, capsys):
    arrays = medmnist_arrays("pathmnist", 6)
    arrays["val_images"], arrays["val_labels"] = arrays["val_images"][:0], arrays["val_labels"][:0]
    (tmp_path / "raw").mkdir()
    np.savez_compressed(tmp_path / "raw" / "pathmnist.npz", **arrays)
    argv = ["medmnist", "--flag", "pathmnist", "--root", str(tmp_path / "raw"), "--out", str(tmp_path / "out")]
    code, _, err = cli([*argv, "--shots", "1"], capsys)
    assert code == 0, err
    assert "warning: no val split" in err and not (tmp_path / "out" / "val.parquet").exists()


def test_min_size_has_an_upper_bound_and_no_upscale_exceeds_the_pixel_limit(tmp_path, capsys, monkeypatch):
    root = make_fixture("patternnet", tmp_path / "raw", n=1)
    code, _, err = cli(["patternnet", "--root", str(root), "--out", str(tmp_path / "o"), "--min-size", "40000"], capsys)
    assert_one_line_error(code, err, "--min-size", "3584")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    enc = encode_image_bytes(_png(pixels(0, 0, (28, 28))), 3584)  # x128 -> 3584^2 = 12.8 M pixels > 1 M
    assert enc.data is None and enc.error_kind == "too_many_pixels" and "x128" in enc.error


# --- 3. nothing left behind, nothing hung ---------------------------------------------------------------------------


def _hanging_site(tmp_path: Path, name: str) -> Path:
    """A `sitecustomize.py` making `read_ref` block forever on files called `name` (main, forkserver and workers)."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(
        "import time\nimport data_prep.source as source\n_read = source.read_ref\n"
        f"def read_ref(ref):\n    if ref.member.endswith({name!r}):\n        time.sleep(3600)\n    return _read(ref)\n"
        "source.read_ref = read_ref\n"
    )
    return site


def test_after_a_sigkill_no_process_survives_and_the_next_run_clears_the_temporary_folder(tmp_path, capsys):
    root = make_fixture("patternnet", tmp_path / "raw", n=2)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": f"{_hanging_site(tmp_path, 'airplane001.jpg')}:{REPO}"}
    cmd = [sys.executable, "-m", "data_prep", "patternnet", "--root", str(root), "--out", str(out), "--workers", "2"]
    proc = subprocess.Popen([*cmd, "--no-progress"], cwd=REPO, env=env, stderr=subprocess.DEVNULL)
    me, descendants = psutil.Process(proc.pid), []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(descendants) < 4:  # resource tracker, forkserver, 2 workers
        descendants = me.children(recursive=True)
        time.sleep(0.05)
    time.sleep(1.0)  # the workers are busy (one blocks on its read)
    try:
        proc.send_signal(signal.SIGKILL)  # what the OOM killer does: no handler runs
        proc.wait(timeout=10)
        _, alive = psutil.wait_procs(descendants, timeout=20)
    finally:
        for p in descendants:
            if p.is_running():
                p.kill()
    assert len(descendants) >= 4 and not alive, f"left running: {alive}"
    left = sorted(p.name for p in out.glob(".data_prep-tmp-*"))
    assert left  # the killed run could not clean up
    code, printed, err = cli(["patternnet", "--root", str(root), "--out", str(out), "--shots", "1"], capsys)
    assert code == 0, err
    assert not list(out.glob(".data_prep-tmp-*")) and "removed 1 temporary folder" in printed + err
    assert left[0] in printed + err


def test_a_failed_run_removes_the_parent_folders_it_created(tmp_path, capsys):
    root = make_fixture("patternnet", tmp_path / "raw", n=1)
    (root / "PatternNet" / "images" / "forest" / "forest001.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "new" / "deeper" / "out"
    code, _, err = cli(["patternnet", "--root", str(root), "--out", str(out)], capsys)
    assert_one_line_error(code, err, "forest001.jpg")
    assert not (tmp_path / "new").exists()


def test_a_fifo_named_like_an_image_does_not_hang(tmp_path):
    root = make_fixture("patternnet", tmp_path / "raw", n=2)
    os.mkfifo(root / "PatternNet" / "images" / "forest" / "forest009.jpg")
    base = [sys.executable, "-m", "data_prep", "patternnet", "--root", str(root), "--no-progress", "--shots", "2"]
    for workers, on_error in (("0", "skip"), ("2", "skip"), ("0", "fail")):
        out = tmp_path / f"out{workers}{on_error}"
        argv = [*base, "--out", str(out), "--workers", workers, "--on-error", on_error]
        done = subprocess.run(argv, cwd=REPO, capture_output=True, timeout=120)
        err = done.stderr.decode()
        if on_error == "fail":
            assert done.returncode == 2 and "a FIFO" in err and "Traceback" not in err, err
        else:
            assert done.returncode == 0, err
            assert report_of(out)["skipped"]["by_reason"] == {"corrupt_image": 1}


# --- 4. messages that lead somewhere --------------------------------------------------------------------------------


def _png(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    (Image.fromarray(arr).convert(mode) if mode else Image.fromarray(arr)).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.mark.parametrize("verify", VERIFY_LEVELS)
@pytest.mark.parametrize("kind", ["png_rgb", "png_palette", "png_gray", "jpeg_rgb", "jpeg_gray"])
def test_a_decompression_bomb_is_too_many_pixels_at_every_level(monkeypatch, verify, kind):
    arr = pixels(0, 0, (64, 64))
    data = {
        "png_rgb": lambda: _png(arr),
        "png_palette": lambda: _png(arr, "P"),
        "png_gray": lambda: _png(arr[:, :, 0]),
        "jpeg_rgb": lambda: _jpeg(arr),
        "jpeg_gray": lambda: _jpeg(arr[:, :, 0]),
    }[kind]()
    for limit in (3000, 1000):  # 4096 pixels: over the limit (PIL warns), over twice the limit (PIL raises)
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
        enc = encode_image_bytes(data, 56, verify)
        assert enc.data is None and enc.error_kind == "too_many_pixels", (limit, enc)


def test_nested_class_trees_get_advice_that_does_not_lead_back_to_the_same_refusal(tmp_path):
    root = make_fixture("ucm", tmp_path / "raw", n=1)
    images = root / "UCMerced_LandUse" / "Images"
    shutil.copytree(images, tmp_path / "old_copy")
    shutil.move(tmp_path / "old_copy", images / "forest" / "old_copy")  # a copy dropped into a class folder
    with pytest.raises(DataPrepError) as err:
        run_rs("ucm", root, tmp_path / "out", on_error="skip")
    text = str(err.value)
    assert "Images/forest/old_copy" in text and "move" in text and "point --root at" not in text
    with pytest.raises(DataPrepError, match="move"):  # what "point --root at the one to convert" would have led to
        run_rs("ucm", root / "UCMerced_LandUse" / "Images", tmp_path / "out", on_error="skip")


@pytest.mark.parametrize(
    ("flag", "value", "needle"),
    [
        ("--shots", "0", "shots must be positive"),
        ("--shots", "x", "shots must be positive"),
        ("--split-ratio", "1,1", "split ratio must be"),
    ],
)
def test_bad_option_values_say_what_is_wrong(tmp_path, capsys, flag, value, needle):
    code, _, err = cli(["patternnet", "--root", str(tmp_path), "--out", str(tmp_path / "o"), flag, value], capsys)
    assert_one_line_error(code, err, needle)
    assert "invalid parse_" not in err


def test_a_3d_npz_under_a_2d_name_is_refused_without_suggesting_skip(tmp_path, capsys):
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = rng.integers(0, 256, size=(4, 28, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = np.zeros((4, 1), dtype=np.uint8)
    (tmp_path / "raw").mkdir()
    np.savez_compressed(tmp_path / "raw" / "organamnist.npz", **arrays)
    argv = ["medmnist", "--flag", "organamnist", "--root", str(tmp_path / "raw"), "--out", str(tmp_path / "o")]
    code, _, err = cli(argv, capsys)
    assert_one_line_error(code, err, "wrong_subset", "not a 2-D MedMNIST file")
    assert "--on-error skip" not in err
