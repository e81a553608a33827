"""`python -m verl_ext.probes` on the tiny model: outputs with the random floor row; mistakes are one line, exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "verl_ext.probes", *args], capture_output=True, text=True, cwd=REPO)


def _user_parquet(tmp_path: Path) -> Path:
    """A data_prep-schema parquet of 30 images in 2 classes (bright / dark), as a converter writes it."""
    import io

    import numpy as np
    import pandas as pd
    from PIL import Image

    rows = []
    for k in range(30):
        buf = io.BytesIO()
        Image.fromarray(np.full((56, 56, 3), 40 + 150 * (k % 2), np.uint8)).save(buf, format="PNG")
        extra = {"label_id": k % 2, "class_names": ["dark", "bright"], "multi_label": False}
        rows.append({"images": [{"bytes": buf.getvalue(), "path": None}], "extra_info": extra})
    path = tmp_path / "user" / "train_all.parquet"
    path.parent.mkdir()
    pd.DataFrame(rows).to_parquet(path)
    return path


def test_cli_writes_probes_with_floor_seeds_colour_rows_and_intervals(tmp_path):
    from verl_ext.cpu.tiny_qwen25vl import build_tiny_model_dir

    model = build_tiny_model_dir(tmp_path / "model")
    out = tmp_path / "out"
    args = ["--model", f"base={model}", "--model", f"sft={model}", "--model", f"dpo={model}", "--out", str(out)]
    args += ["--input-size", "112", "--probes", "linear,segmentation", "--probe-parquet", str(_user_parquet(tmp_path))]
    args += ["--tasks", "s2-3class", "--limit", "6", "--c-grid", "1", "--blocks", "last", "--no-progress"]
    proc = _cli(*args, "--random-seeds", "1,2,3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "probes.json").read_text())
    assert set(res["random"]) == {"linear", "segmentation"} and list(res["base"]["linear"]["s2-3class"]["blocks"]) == [
        "1"
    ]
    assert "random@2" in res and "random@3" in res and res["run"]["random_seeds"] == [1, 2, 3]
    assert res["run"]["c_grid"] == [1.0] and res["base"]["linear"]["s2-3class"]["n"] == {
        "train": 6,
        "val": 6,
        "test": 6,
    }
    # the floor: mean ± std over the three seeds' last-block scores
    values = [res[r]["linear"]["s2-3class"]["blocks"]["1"]["test"] for r in ("random", "random@2", "random@3")]
    assert res["floor"]["s2-3class"]["values"] == values and res["floor"]["s2-3class"]["seeds"] == 3
    # trivial rows on every set; the user's set: bright/dark is colour, so mean colour is perfect on it
    assert res["colour mean"]["linear"]["user"]["blocks"]["0"]["test"] == 1.0
    assert "patch colour" in res and res["run"]["sets"]["user"]["classes"] == ["dark", "bright"]
    assert res["base"]["segmentation"]["blocks"]["1"]["c"] == 1.0  # the C grid asked for (not the 8 x 8 label grid)
    # intervals: each row, DPO − SFT (identical checkpoints here: exactly 0), each model − the colour row
    ci = res["intervals"]["s2-3class"]
    assert ci["dpo-sft"]["value"] == ci["dpo-sft"]["ci_low"] == ci["dpo-sft"]["ci_high"] == 0.0
    assert ci["base"]["n_items"] == 6 and "base-colour mean+std" in ci
    assert res["intervals"]["s2-segmentation"]["base"]["n_items"] == 6 * 8 * 8  # 6 test tiles x 8 x 8 patches
    table = (out / "probes.md").read_text()
    assert "| random@2 |" in table and "random floor, mean ± std over 3 seeds" in table and "| colour mean |" in table
    assert "| dpo − sft | +0.000 [+0.000, +0.000] (not resolved) |" in table and "majority class" in table
    assert (out / "linear_s2-3class.png").exists() and (out / "segmentation.png").exists()


def test_cli_mistakes_are_one_line_exit_2(tmp_path, capsys):
    from verl_ext.probes.__main__ import main

    for args, text in (
        (["--model", f"base={tmp_path}", "--out", str(tmp_path / "o")], "no config.json"),
        (["--model", "nopath", "--out", "o"], "expected NAME=PATH"),
        (["--model", "random=/x", "--out", "o"], "must be unique and not 'random'"),
        (["--model", "a=/x", "--out", "o", "--c-grid", "x"], "--c-grid"),
        (["--model", "a=/x", "--out", "o", "--random-seeds", "x"], "--random-seeds"),
    ):
        try:
            code = main(args)
        except SystemExit as exit_:  # argparse's own errors
            code = exit_.code
        err = capsys.readouterr().err
        assert code == 2, (args, err)
        assert text in err.strip().splitlines()[-1], err  # one line (argparse prints its usage above its own)
