"""`make demo` end to end, at the smallest sizes: data -> tiny model -> verl's SFT warm start -> grpo and dc_dr through
verl's loop -> held-out evaluation -> one PNG + table. Checks the outputs, not the effect (no threshold: the demo's
numbers are a measurement, `bench/bench_effect.py`)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from data_prep.whitelist import ALL
from recipe.common.runs import metric_series

REPO = Path(__file__).resolve().parents[2]
SMALL = ["--steps", "1", "--sft-steps", "2", "--sft-batch", "4", "--batch-size", "2", "--n", "2", "--eval-limit", "2"]


@pytest.mark.slow
def test_demo_writes_png_table_and_metrics(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    argv = [sys.executable, "-m", "recipe.domain_grpo.demo", "--out", str(out), *SMALL]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    # the warm start's held-out cross-view JS is reported before RL, next to the random model's
    assert "[demo] warm start: held-out cross-view JS" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    models = summary["models"]
    assert list(models) == ["random", "warm_start", "grpo", "dc_dr"]
    for name, s in models.items():
        assert math.isfinite(s["js"]) and 0.0 <= s["js"] <= 1.0, name
        assert set(s["accuracy_per_view"]) == set(ALL), name  # every symmetry of the square
    assert summary["js_ratio_dc_dr_over_grpo"] > 0
    # dc_dr against grpo on the same held-out images, with 95% bootstrap intervals (the spread the table shows)
    paired = summary["paired_dc_dr_vs_grpo"]
    assert set(paired) == {"js", "agreement", "accuracy", "accuracy_transformed"}
    for metric, r in paired.items():
        assert r["n_images"] == 2 and r["delta_low"] <= r["delta"] <= r["delta_high"], metric
        # the per-image means re-derive the evaluation's own (JS: float precision at this tiny model's ~1e-8 bits)
        same = {"rel": 1e-3, "abs": 1e-9}
        assert r["base"] == pytest.approx(models["grpo"][metric], **same)
        assert r["arm"] == pytest.approx(models["dc_dr"][metric], **same)
    for name in ("random", "warm_start", "grpo_seed0_steps1", "dc_dr_seed0_steps1"):
        assert (out / "eval" / name / "metrics.json").exists(), name
    for run in ("grpo_seed0_steps1", "dc_dr_seed0_steps1"):
        assert [step for step, _ in metric_series(out / "rl" / run / "metrics.jsonl", "critic/score/mean")] == [1]
    png = (out / "demo.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    # the console ends with the markdown table (the same as summary.md)
    table = (out / "summary.md").read_text().strip()
    assert table.startswith("| model |") and "GRPO + DC + DR" in table and "Paired on the same 2 held-out" in table
    assert proc.stdout.rstrip().endswith(table.splitlines()[-1])
    # a rerun with the same settings skips every step
    again = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "running" not in again.stdout and again.stdout.count("done before, skipped") >= 10
