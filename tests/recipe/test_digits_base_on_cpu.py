"""The shipped digits base (recipe/domain_grpo/digits_base.py): its files and the train split it was trained on are
checked before the demo uses it; `--build-base` runs the SFT command its provenance records."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from recipe.domain_grpo import demo, digits_base
from recipe.domain_grpo.demo_pipeline import StepError
from recipe.domain_grpo.digits_base import (
    PROVENANCE,
    SHIPPED_BASE,
    BaseMismatch,
    check_shipped_base,
    compare_with_shipped,
    split_digest,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    """`python -m data_prep digits` as the demo runs it (seed 0)."""
    out = tmp_path_factory.mktemp("digits")
    argv = [sys.executable, "-m", "data_prep", "digits", "--out", str(out), "--no-progress", "--workers", "0"]
    subprocess.run([*argv, "--seed", "0"], cwd=REPO, check=True, capture_output=True, timeout=300)
    return out


def _rewrite(src: Path, dst: Path, change) -> Path:
    rows = pq.read_table(src).to_pylist()
    change(rows)
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(src)), dst)
    return dst


def _png(array: np.ndarray, level: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=level)
    return buf.getvalue()


def _pixels(row: dict) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(row["images"][0]["bytes"])).convert("RGB"))


def test_split_digest_reads_content_not_bytes_or_order(digits, tmp_path):
    train = digits / "train.parquet"
    digest, rows = split_digest(train)
    assert rows == 754

    def recompress_and_reverse(rows):  # other PNG bytes for the same pixels, rows in another order
        for row in rows:
            row["images"][0]["bytes"] = _png(_pixels(row), level=0)
        rows.reverse()

    assert split_digest(_rewrite(train, tmp_path / "same.parquet", recompress_and_reverse)) == (digest, 754)

    def relabel(rows):
        rows[5]["reward_model"]["ground_truth"] = "7" if rows[5]["reward_model"]["ground_truth"] != "7" else "1"

    def one_pixel(rows):
        array = _pixels(rows[5]).copy()
        array[0, 0] ^= 1
        rows[5]["images"][0]["bytes"] = _png(array, level=6)

    def one_row_fewer(rows):
        rows.pop()

    for change in (relabel, one_pixel, one_row_fewer):
        assert split_digest(_rewrite(train, tmp_path / f"{change.__name__}.parquet", change))[0] != digest


def test_the_shipped_base_matches_its_provenance_and_the_data(digits):
    record = check_shipped_base(SHIPPED_BASE, digits / "train.parquet")
    assert set(record["files"]) == set(digits_base.MODEL_FILES)
    shipped = record["held_out_when_shipped"]
    # what the demo relies on: a gap whose interval excludes 0 (recorded when shipped; the demo measures it again)
    assert shipped["gap"][1] > 0.1 and shipped["accuracy_per_view"]["identity"] > 0.5


def test_a_changed_file_or_other_data_stops_the_demo(digits, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(SHIPPED_BASE, base)
    weights = bytearray((base / "model.safetensors").read_bytes())
    weights[-1] ^= 1  # one bit of the last weight
    (base / "model.safetensors").write_bytes(bytes(weights))
    with pytest.raises(BaseMismatch, match="model.safetensors is missing or differs"):
        check_shipped_base(base, digits / "train.parquet")
    assert not compare_with_shipped(base)
    shutil.copyfile(SHIPPED_BASE / "model.safetensors", base / "model.safetensors")
    assert compare_with_shipped(base)
    # another split (seed 1): the held-out images may be ones the base was trained on
    other = tmp_path / "seed1"
    argv = [sys.executable, "-m", "data_prep", "digits", "--out", str(other), "--no-progress", "--workers", "0"]
    subprocess.run([*argv, "--seed", "1"], cwd=REPO, check=True, capture_output=True, timeout=300)
    with pytest.raises(BaseMismatch, match="is not the one the shipped base was trained on"):
        check_shipped_base(base, other / "train.parquet")
    record = json.loads((base / PROVENANCE).read_text())
    for broken in ("{not json", json.dumps({**record, "train_split": {}}), "[]"):
        (base / PROVENANCE).write_text(broken)
        with pytest.raises(BaseMismatch, match="provenance.json is unreadable"):
            check_shipped_base(base, digits / "train.parquet")
    (base / PROVENANCE).unlink()
    with pytest.raises(BaseMismatch, match="no provenance.json"):
        check_shipped_base(base, digits / "train.parquet")
    assert compare_with_shipped(base, folder=base) is None  # nothing to compare with: said, not a traceback


def test_build_base_runs_the_sft_command_the_provenance_records(tmp_path):
    # --build-base must rebuild THE shipped base: verl's SFT command it would run now equals the recorded one (paths
    # of the work folder and the interpreter aside), so a bit-identical rebuild is a real provenance check.
    args = demo.build_parser().parse_args(["--out", str(tmp_path), "--build-base"])
    pipe = digits_base.DigitsPipeline(tmp_path, demo.settings_from(args))
    steps = {}
    pipe.step = lambda name, argv, *a, **k: steps.update({name: [str(x) for x in argv]})  # record, run nothing
    pipe.train_rows = lambda: 754
    with pytest.raises(StepError, match="saved no HF weights"):  # nothing ran: only the commands matter here
        demo.base_model(pipe, build=True)
    recorded = json.loads((SHIPPED_BASE / PROVENANCE).read_text())["sft"]["argv"]
    now = [a.replace(str(tmp_path), "<out>").replace(sys.executable, "python") for a in steps["sft"]]
    assert now == recorded
    assert "model" in steps  # the tiny random model is built first, as for the shipped base


def test_ship_writes_a_base_that_passes_its_own_check(digits, tmp_path):
    # a work folder shaped like the demo's after --build-base (the shipped files as its SFT output)
    out = tmp_path / "out"
    hf = out / "sft" / "ckpt" / "global_step_2" / "huggingface"
    shutil.copytree(SHIPPED_BASE, hf)
    (out / "sft" / "ckpt" / "latest_checkpointed_iteration.txt").write_text("2")
    (out / ".done").mkdir(parents=True)
    (out / ".done" / "sft.json").write_text(json.dumps({"argv": [sys.executable, f"data={out}/sft"], "seconds": 1.0}))
    shutil.copytree(digits, out / "data")
    lines = [
        {"index": i, "view": v, "label": "1", "prediction": "1" if v == "identity" else "7"}
        for i in range(4)
        for v in ("identity", "rot90")
    ]
    (out / "eval" / "base").mkdir(parents=True)
    (out / "eval" / "base" / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    dest = tmp_path / "shipped"
    record = digits_base.ship(out, dest)
    assert record["sft"]["argv"] == ["python", "data=<out>/sft"]
    assert record["held_out_when_shipped"]["gap"] == [1.0, 1.0, 1.0]  # every image right upright, wrong turned
    assert check_shipped_base(dest, digits / "train.parquet")["files"] == record["files"]
    assert sorted(p.name for p in dest.iterdir()) == sorted([*digits_base.MODEL_FILES, PROVENANCE])


def test_the_rl_seed_does_not_move_the_split(tmp_path):
    # `--seed 1` seeds the RL runs; the digits split stays the shipped base's (seed 0), else the held-out images
    # would include images the base was trained on (and the provenance check would refuse the data).
    args = demo.build_parser().parse_args(["--out", str(tmp_path), "--seed", "1"])
    pipe = digits_base.DigitsPipeline(tmp_path, demo.settings_from(args))
    steps = {}
    pipe.step = lambda name, argv, *a, **k: steps.update({name: [str(x) for x in argv]})
    pipe.prepare_data()
    data = steps["data"]
    assert data[data.index("--seed") + 1] == "0" and pipe.s.seed == 1


def test_sft_sizes_without_build_base_are_refused(tmp_path, capsys):
    # the shipped base is used as it is: an SFT size given without --build-base would be ignored, so it is refused
    assert demo.main(["--out", str(tmp_path), "--sft-steps", "10"]) == 2
    assert "add --build-base" in capsys.readouterr().err
    assert demo.main(["--out", str(tmp_path), "--build-base", "--sft-steps", "0"]) == 2
    assert "--sft-steps must be >= 1" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before any step ran
