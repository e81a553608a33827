"""`python -m verl_ext.probes` on the tiny model: outputs with the random floor row; mistakes are one line, exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "verl_ext.probes", *args], capture_output=True, text=True, cwd=REPO)


def test_cli_writes_probes_with_the_floor_row(tmp_path):
    from verl_ext.cpu.tiny_qwen25vl import build_tiny_model_dir

    model = build_tiny_model_dir(tmp_path / "model")
    out = tmp_path / "out"
    args = ["--model", f"base={model}", "--out", str(out), "--input-size", "112", "--probes", "linear,segmentation"]
    proc = _cli(*args, "--tasks", "s2-3class", "--limit", "6", "--c-grid", "1", "--blocks", "last", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "probes.json").read_text())
    assert set(res["random"]) == {"linear", "segmentation"} and list(res["base"]["linear"]["s2-3class"]["blocks"]) == [
        "1"
    ]
    assert res["run"]["c_grid"] == [1.0] and res["base"]["linear"]["s2-3class"]["n"] == {
        "train": 6,
        "val": 6,
        "test": 6,
    }
    table = (out / "probes.md").read_text()
    assert "| random |" in table and "(floor " in table and "majority class" in table
    assert (out / "linear_s2-3class.png").exists() and (out / "segmentation.png").exists()


def test_cli_mistakes_are_one_line_exit_2(tmp_path, capsys):
    from verl_ext.probes.__main__ import main

    for args, text in (
        (["--model", f"base={tmp_path}", "--out", str(tmp_path / "o")], "no config.json"),
        (["--model", "nopath", "--out", "o"], "expected NAME=PATH"),
        (["--model", "random=/x", "--out", "o"], "must be unique and not 'random'"),
        (["--model", "a=/x", "--out", "o", "--c-grid", "x"], "--c-grid"),
    ):
        try:
            code = main(args)
        except SystemExit as exit_:  # argparse's own errors
            code = exit_.code
        err = capsys.readouterr().err
        assert code == 2, (args, err)
        assert text in err.strip().splitlines()[-1], err  # one line (argparse prints its usage above its own)
