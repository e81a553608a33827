"""data_prep reports every failure in one line (exit 2, no traceback) and never leaves junk: broken npz files, bad
options and output paths, read-only and full disks, SIGTERM, images the processor refuses, empty splits, and a
report.json that is byte-identical across runs."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from dp_fixtures import make_fixture, medmnist_arrays, pixels, save, write_medmnist_npz
from dp_helpers import assert_one_line_error, cli, no_junk, report_of, rows, run_rs
from PIL import Image

from data_prep import writer
from data_prep.images import encode_image_bytes
from data_prep.report import DataPrepError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pn_root(tmp_path_factory):
    return make_fixture("patternnet", tmp_path_factory.mktemp("pn") / "raw")


# --- broken npz files ----------------------------------------------------------------------------------------------


def _broken_npz(folder: Path, damage: str) -> Path:
    path = write_medmnist_npz(folder, "pneumoniamnist", n=6)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "not_zip":
        path.write_text("this is not an npz file\n")
    elif damage == "no_images":
        arrays = {k: v for k, v in medmnist_arrays("pneumoniamnist", 6).items() if k.endswith("_labels")}
        np.savez_compressed(path, **arrays)
    elif damage == "bad_crc":  # stored (uncompressed) members: flip one byte of the train images' pixel data
        np.savez(path, **medmnist_arrays("pneumoniamnist", 6))
        data = bytearray(path.read_bytes())
        at = data.index(b"train_images.npy") + 400
        data[at] ^= 0xFF
        path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("damage", ["truncated", "empty", "not_zip", "no_images", "bad_crc"])
def test_broken_npz_is_a_one_line_error(tmp_path, capsys, damage):
    path = _broken_npz(tmp_path / "raw", damage)
    out = tmp_path / "out"
    argv = ["medmnist", "--flag", "pneumoniamnist", "--root", str(path), "--out", str(out), "--on-error", "skip"]
    code, _, err = cli([*argv, "--shots", "all"], capsys)  # all: every row is read (a bad CRC shows at the end)
    assert_one_line_error(code, err, "pneumoniamnist.npz")
    assert no_junk(out)


# --- options and output paths --------------------------------------------------------------------------------------


def test_negative_seed_is_a_one_line_error(pn_root, tmp_path, capsys):
    code, _, err = cli(["patternnet", "--root", str(pn_root), "--out", str(tmp_path / "o"), "--seed", "-1"], capsys)
    assert_one_line_error(code, err, "--seed", "-1")
    with pytest.raises(DataPrepError, match="seed"):
        run_rs("patternnet", pn_root, tmp_path / "o2", seed=-1)
    assert not (tmp_path / "o").exists() and not (tmp_path / "o2").exists()


@pytest.mark.parametrize("where", ["is_a_file", "under_a_file"])
def test_out_that_is_a_file_is_a_one_line_error(pn_root, tmp_path, capsys, where):
    target = tmp_path / "taken.txt"
    target.write_text("keep me")
    out = target if where == "is_a_file" else target / "sub"
    code, _, err = cli(["patternnet", "--root", str(pn_root), "--out", str(out)], capsys)
    assert_one_line_error(code, err, str(target))
    assert target.read_text() == "keep me"


def test_read_only_out_is_a_one_line_error(pn_root, tmp_path, capsys, monkeypatch):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    if os.geteuid() == 0:  # root ignores the mode bits: make the folder creation fail as it would for a user

        def refuse(*args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied", str(parent / "out"))

        monkeypatch.setattr(writer.tempfile, "mkdtemp", refuse)
        monkeypatch.setattr(writer.Path, "mkdir", refuse)
    try:
        code, _, err = cli(["patternnet", "--root", str(pn_root), "--out", str(parent / "out")], capsys)
    finally:
        parent.chmod(0o755)
    assert_one_line_error(code, err, str(parent), "Permission denied")
    assert no_junk(parent / "out")


@pytest.mark.parametrize("when", ["parquet", "report"])
def test_full_disk_is_a_one_line_error_and_leaves_nothing(pn_root, tmp_path, capsys, monkeypatch, when):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    if when == "parquet":
        monkeypatch.setattr(writer.pq.ParquetWriter, "write_table", full)
    else:
        monkeypatch.setattr(writer.OutputDir, "write_text", full)
    out = tmp_path / "out"
    code, _, err = cli(["patternnet", "--root", str(pn_root), "--out", str(out), "--shots", "1"], capsys)
    assert_one_line_error(code, err, str(out), "No space left on device")
    assert no_junk(out)


# --- SIGTERM -------------------------------------------------------------------------------------------------------


def hanging_read(tmp_path: Path, name: str) -> Path:
    """A folder holding a `sitecustomize.py` that makes `data_prep.source.read_ref` block forever on files called
    `name` in every process that has the folder on its PYTHONPATH (main, forkserver, workers)."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(
        "import faulthandler, signal, time\n"
        "faulthandler.register(signal.SIGUSR1, all_threads=True)  # the stacks of a hung run, for the test's message\n"
        "# Ctrl-C as from a terminal: a suite started in the background (`make test &`) hands its children SIGINT\n"
        "# ignored, and the run then never sees the signal (the hang this test once showed); workers re-ignore it\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "import data_prep.source as source\n"
        "_read = source.read_ref\n"
        "def read_ref(ref):\n"
        f"    if ref.member.endswith({name!r}):\n"
        "        time.sleep(3600)\n"
        "    return _read(ref)\n"
        "source.read_ref = read_ref\n"
    )
    return site


@pytest.mark.parametrize(
    ("sig", "to"),
    [
        (signal.SIGTERM, "main"),  # `kill PID`
        (signal.SIGTERM, "group"),  # a job scheduler stopping the job (every process of the group)
        (signal.SIGINT, "group"),  # Ctrl-C in a terminal
    ],
)
def test_a_signal_removes_the_temporary_folder_and_the_workers(pn_root, tmp_path, sig, to):
    """A worker blocks forever reading one image (a `sitecustomize` in every process of the run makes that read
    hang, like a hung network file), so the run is reliably mid-way when the signal arrives; the run must then remove
    its temporary folder, stop its pool and say so in one line."""
    root = shutil.copytree(pn_root, tmp_path / "raw")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "data_prep", "patternnet", "--root", str(root), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": f"{hanging_read(tmp_path, 'airplane001.jpg')}:{REPO}"}
    proc = subprocess.Popen(
        [*cmd, "--workers", "2", "--no-progress"], cwd=REPO, env=env, stderr=subprocess.PIPE, start_new_session=True
    )
    me = psutil.Process(proc.pid)
    deadline = time.monotonic() + 60
    descendants: list[psutil.Process] = []
    while time.monotonic() < deadline and proc.poll() is None:
        tmp = list(out.glob(".data_prep-tmp-*")) if out.exists() else []
        descendants = me.children(recursive=True)
        if tmp and len(descendants) >= 3:  # forkserver + 2 workers (+ resource tracker)
            break
        time.sleep(0.05)
    assert proc.poll() is None and tmp, "the run did not reach the pool"
    time.sleep(0.5)  # let the workers pick up the chunks (one blocks on the hanging read)
    if to == "group":
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    try:
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # a run that hangs: say where
            for p in [me, *descendants]:
                with contextlib.suppress(psutil.Error):
                    p.send_signal(signal.SIGUSR1)  # faulthandler (hanging_read's sitecustomize) prints every stack
            time.sleep(2)
            os.killpg(proc.pid, signal.SIGKILL)
            _, stacks = proc.communicate(timeout=30)
            pytest.fail(f"the run did not end within 30 s of {sig.name}; its stacks:\n{stacks.decode()[-8000:]}")
        _, alive = psutil.wait_procs(descendants, timeout=15)
    finally:  # never leave a process behind, whatever failed
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for p in descendants:
            if p.is_running():
                p.kill()
    text = err.decode()
    assert proc.returncode == 128 + sig, text
    assert not alive, f"left running: {alive}"
    assert no_junk(out)
    name = "SIGTERM" if sig == signal.SIGTERM else "Ctrl-C"
    assert len(text.strip().splitlines()) == 1 and name in text and "Traceback" not in text, text


# --- images the processor refuses ---------------------------------------------------------------------------------


def _jpeg(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _claimed_size(data: bytes, width: int, height: int) -> bytes:
    """The same JPEG with its frame header (SOF0) claiming another size: a decompression-bomb header."""
    at = data.index(b"\xff\xc0")
    return data[: at + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + data[at + 9 :]


@pytest.mark.parametrize("verify", ["fast", "full"])
def test_extreme_aspect_ratio_and_pixel_bombs_are_refused_in_every_verify_mode(verify):
    long_strip = _jpeg(np.full((56, 56 * 202, 3), 90, np.uint8))  # 202:1 > Qwen2.5-VL's 200:1
    ok_strip = _jpeg(np.full((56, 56 * 199, 3), 90, np.uint8))
    bomb = _claimed_size(_jpeg(np.full((64, 64, 3), 90, np.uint8)), 10_000, 9_000)  # 9e7 > PIL's 89,478,485
    assert encode_image_bytes(long_strip, 56, verify).error_kind == "extreme_aspect_ratio"
    assert encode_image_bytes(ok_strip, 56, verify).data == ok_strip
    enc = encode_image_bytes(bomb, 56, verify)
    assert enc.error_kind == "too_many_pixels" and "90000000" in enc.error


def test_refused_images_are_counted_when_skipping(pn_root, tmp_path):
    root = shutil.copytree(pn_root, tmp_path / "raw")
    folder = root / "PatternNet" / "images" / "beach"
    (folder / "zz_strip.jpg").write_bytes(_jpeg(np.full((56, 56 * 202, 3), 90, np.uint8)))
    (folder / "zz_bomb.jpg").write_bytes(_claimed_size(_jpeg(np.full((64, 64, 3), 90, np.uint8)), 10_000, 9_000))
    report = run_rs("patternnet", root, tmp_path / "out", shots=[None], verify="fast", on_error="skip")
    assert report["skipped"]["by_reason"] == {"extreme_aspect_ratio": 1, "too_many_pixels": 1}


# --- empty splits and short k-shot files are shown on the console ---------------------------------------------------


def test_an_empty_split_and_a_short_k_shot_file_are_printed(tmp_path, capsys):
    write_medmnist_npz(tmp_path / "raw", "pneumoniamnist", n=3, drop_key="val_images")
    argv = ["medmnist", "--flag", "pneumoniamnist", "--root", str(tmp_path / "raw"), "--out", str(tmp_path / "out")]
    code, _, err = cli([*argv, "--on-error", "skip", "--shots", "1,4"], capsys)
    assert code == 0
    assert re.search(r"warning: no val split", err) and re.search(r"warning: train: fewer than 4 usable images", err)
    assert report_of(tmp_path / "out")["warnings"]


def test_a_split_whose_images_all_fail_is_printed(tmp_path, capsys):
    root = make_fixture("ucm", tmp_path / "raw", split_files=True)  # image 01 of every class -> val
    for tif in root.rglob("*01.tif"):
        tif.write_bytes(b"not a tiff")
    argv = ["ucm", "--root", str(root), "--out", str(tmp_path / "out"), "--on-error", "skip", "--shots", "1"]
    code, _, err = cli(argv, capsys)
    assert code == 0 and "warning: val.parquet has no rows" in err
    assert rows(tmp_path / "out" / "test.parquet")


@pytest.mark.parametrize("how", ["train_array_missing", "ratio"])
def test_an_empty_train_split_is_an_error(pn_root, tmp_path, capsys, how):
    if how == "ratio":
        argv = ["patternnet", "--root", str(pn_root), "--split-ratio", "0,0.5,0.5"]
    else:
        write_medmnist_npz(tmp_path / "raw", "pneumoniamnist", n=3, drop_key="train_images")
        argv = ["medmnist", "--flag", "pneumoniamnist", "--root", str(tmp_path / "raw"), "--on-error", "skip"]
    code, _, err = cli([*argv, "--out", str(tmp_path / "out")], capsys)
    assert_one_line_error(code, err, "train")
    assert no_junk(tmp_path / "out")


# --- byte-identical reports, macOS metadata files ---------------------------------------------------------------


def test_report_is_byte_identical_with_undecodable_files(pn_root, tmp_path):
    root = shutil.copytree(pn_root, tmp_path / "raw")
    (root / "PatternNet" / "images" / "beach" / "zz_text.jpg").write_bytes(b"just some text")
    save(root / "PatternNet" / "images" / "beach" / "zz_png.png", pixels(0, 0))
    (root / "PatternNet" / "images" / "beach" / "zz_png.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(30))
    texts = []
    for out in ("a", "b"):
        run_rs("patternnet", root, tmp_path / out, shots=[1], on_error="skip")
        texts.append((tmp_path / out / "report.json").read_bytes())
    assert texts[0] == texts[1]
    assert not re.search(rb"0x[0-9a-fA-F]{6,}", texts[0]), texts[0]


def test_macos_appledouble_files_are_ignored(pn_root, tmp_path):
    root = shutil.copytree(pn_root, tmp_path / "raw")
    folder = root / "PatternNet" / "images" / "beach"
    (folder / "._beach001.jpg").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    report = run_rs("patternnet", root, tmp_path / "out", shots=[1])  # --on-error fail: nothing to fail on
    assert report["skipped"]["total"] == 0
    assert set(report["ignored_files"]["examples"]) == {
        "PatternNet/images/beach/._beach001.jpg",
        "PatternNet/images/beach/.DS_Store",
    }


def test_a_dead_worker_is_a_one_line_error(pn_root, tmp_path, capsys, monkeypatch):
    from concurrent.futures.process import BrokenProcessPool

    def dead(self, payloads, chunk_fn=None):
        raise BrokenProcessPool("A process in the process pool was terminated abruptly")
        yield

    monkeypatch.setattr(writer.EncoderPool, "map", dead)
    out = tmp_path / "out"
    code, _, err = cli(["patternnet", "--root", str(pn_root), "--out", str(out), "--shots", "1"], capsys)
    assert_one_line_error(code, err, "worker died")
    assert no_junk(out)


def test_macos_appledouble_files_are_ignored_by_rsicd_too(tmp_path):
    root = make_fixture("rsicd", tmp_path / "raw")
    (root / "txtclasses_rsicd" / "._Airport.txt").write_bytes(b"\x00\x05\x16\x07Mac OS X")
    (root / "RSICD_images" / "._airport_1.jpg").write_bytes(b"\x00\x05\x16\x07Mac OS X")
    report = run_rs("rsicd", root, tmp_path / "out", shots=[1], on_error="skip")
    assert report["skipped"]["by_reason"] == {"unlabeled": 1}  # the fixture's one image in no list, nothing else
    assert "txtclasses_rsicd/._Airport.txt" in report["ignored_files"]["examples"]


def test_a_damaged_member_of_a_zip_root_is_a_counted_corrupt_image(pn_root, tmp_path):
    from dp_fixtures import zip_tree

    archive = zip_tree(pn_root / "PatternNet", tmp_path / "PatternNet.zip")
    data = bytearray(archive.read_bytes())
    at = data.index(b"PatternNet/images/beach/beach001.jpg") + 200  # inside that member's compressed data
    data[at : at + 8] = bytes(8)
    archive.write_bytes(bytes(data))
    with pytest.raises(DataPrepError, match=r"\[corrupt_image\].*beach001\.jpg"):
        run_rs("patternnet", archive, tmp_path / "fail", shots=[None])
    report = run_rs("patternnet", archive, tmp_path / "out", shots=[None], on_error="skip")
    assert report["skipped"]["by_reason"] == {"corrupt_image": 1}
