"""`python -m data_prep` command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from dp_fixtures import make_fixture, write_medmnist_npz
from dp_helpers import report_of, rows

from data_prep.__main__ import run

REPO = Path(__file__).resolve().parents[2]


def test_cli_converts_a_folder_dataset(tmp_path, capsys):
    root = make_fixture("patternnet", tmp_path / "raw")
    out = tmp_path / "out"
    argv = ["patternnet", "--root", str(root), "--out", str(out), "--shots", "2,1", "--seed", "5", "--workers", "0"]
    report = run([*argv, "--prompt", "injection", "--eval-per-class", "1", "--no-progress"])
    assert report["shots"] == [1, 2] and report["seed"] == 5 and report["eval_per_class"] == 1
    assert sorted(p.name for p in out.iterdir()) == [
        "report.json",
        "splits.json",
        "test.parquet",
        "train_1shot.parquet",
        "train_2shot.parquet",
    ]
    assert len(rows(out / "test.parquet")) == 38 and report_of(out)["prompt_variant"] == "injection"
    assert "patternnet: wrote train_1shot.parquet (38)" in capsys.readouterr().out


def test_cli_medmnist_size_flag(tmp_path):
    write_medmnist_npz(tmp_path / "raw", "retinamnist", n=5, size=128)
    out = tmp_path / "out"
    argv = ["medmnist", "--flag", "retinamnist", "--size", "128", "--root", str(tmp_path / "raw"), "--out", str(out)]
    report = run([*argv, "--workers", "0", "--no-progress", "--shots", "all"])
    assert report["npz"] == "retinamnist_128.npz" and report["dataset"] == "medmnist/retinamnist"
    assert rows(out / "train_all.parquet")[0]["extra_info"]["class_names"] == ["0", "1", "2", "3", "4"]


def test_cli_data_error_exits_2_with_a_clear_message(tmp_path):
    root = make_fixture("rsicd", tmp_path / "raw")  # holds one image in no class list
    cmd = [sys.executable, "-m", "data_prep", "rsicd", "--root", str(root), "--out", str(tmp_path / "out")]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "[unlabeled]" in done.stderr and "00005.jpg" in done.stderr and "--on-error skip" in done.stderr


@pytest.mark.parametrize("bad", [["--shots", "0"], ["--split-ratio", "0.5,0.6,0"], ["--eval-per-class", "0"]])
def test_cli_rejects_bad_options(tmp_path, bad):
    with pytest.raises(SystemExit):
        run(["ucm", "--root", str(tmp_path), "--out", str(tmp_path / "o"), *bad])
