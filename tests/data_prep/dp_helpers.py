"""Shared helpers of the data_prep tests: run a conversion in-process and read its outputs."""

from __future__ import annotations

import io
import json
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from data_prep import aid, medmnist, patternnet, resisc45, rsicd, ucm, whu_rs19
from data_prep.pipeline import RunOptions, convert

MODULES = {m.NAME: m for m in (ucm, aid, rsicd, whu_rs19, patternnet, resisc45)}


def run_rs(name: str, root: Path, out: Path, use_split_files: bool = True, **opts) -> dict:
    """Convert a remote-sensing fixture in-process (inline encoding unless `workers` is given)."""
    opts.setdefault("workers", 0)
    opts.setdefault("progress", False)
    build = partial(MODULES[name].build_index, str(root), use_split_files=use_split_files)
    return convert(build, RunOptions(out=out, **opts))


def run_medmnist(flag: str, root: Path, out: Path, size: int = 28, check_sizes: bool = False, **opts) -> dict:
    """Convert a MedMNIST npz in-process."""
    opts.setdefault("workers", 0)
    opts.setdefault("progress", False)
    build = partial(medmnist.build_index, str(root), flag=flag, size=size, check_sizes=check_sizes)
    return convert(build, RunOptions(out=out, **opts))


def rows(path: Path) -> list[dict]:
    """All rows of a parquet file as dicts."""
    return pq.read_table(path).to_pylist()


def image_of(row: dict) -> np.ndarray:
    """The row's decoded image as an H x W x 3 array."""
    return np.asarray(Image.open(io.BytesIO(row["images"][0]["bytes"])).convert("RGB"))


def report_of(out: Path) -> dict:
    """The run's report.json."""
    return json.loads((out / "report.json").read_text())


def file_bytes(out: Path) -> dict[str, bytes]:
    """Every output file's bytes, by name (for byte-identity checks)."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run `python -m data_prep` in-process (inline workers, no bar): (exit status, stdout, stderr)."""
    from data_prep.__main__ import main

    try:
        main([*argv, "--workers", "0", "--no-progress"])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    """Exit status 2, one `error:` line, no traceback, and every needle in it."""
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def no_junk(out: Path) -> bool:
    """Nothing left by a failed run: no folder, or an empty one."""
    return not out.exists() or not any(out.iterdir())
