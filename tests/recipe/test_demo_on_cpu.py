"""`make demo` end to end, at the smallest sizes: digits data -> the shipped upright-SFT base (checked against its
provenance) -> its invariance gap -> grpo and dc_dr through verl's loop -> held-out evaluation on all 8 views -> one
PNG + tables. Checks the outputs, not the effect (no threshold: the demo's numbers are a measurement,
`bench/bench_invariance_gap.py`)."""

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
SMALL = ["--steps", "1", "--batch-size", "2", "--n", "2", "--eval-limit", "2"]


@pytest.mark.slow
def test_demo_writes_png_tables_and_metrics(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    argv = [sys.executable, "-m", "recipe.domain_grpo.demo", "--out", str(out), *SMALL]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    # the base is the shipped one, checked, and its gap is reported before RL
    assert "[demo] shipped base recipe/domain_grpo/assets/digits_upright_base (files and train split" in proc.stdout
    assert "[demo] base: held-out accuracy" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    models = summary["models"]
    assert list(models) == ["base", "grpo", "dc_dr"] and list(summary["gaps"]) == list(models)
    for name, s in models.items():
        assert math.isfinite(s["js"]) and 0.0 <= s["js"] <= 1.0, name
        assert set(s["accuracy_per_view"]) == set(ALL), name  # every symmetry of the square
        gap = summary["gaps"][name]
        assert gap["n_images"] == 2 and gap["gap"]["ci_low"] <= gap["gap"]["value"] <= gap["gap"]["ci_high"], name
        # the gap record and the evaluation's own summary are two readings of the same predictions
        assert gap["accuracy"]["identity"] == pytest.approx(s["accuracy"]), name
        assert gap["transformed"]["value"] == pytest.approx(s["accuracy_transformed"]), name
    assert summary["js_ratio_dc_dr_over_grpo"] > 0
    # dc_dr against grpo on the same held-out images, with 95% bootstrap intervals (the spread the table shows)
    paired = summary["paired_dc_dr_vs_grpo"]
    assert set(paired) == {"js", "agreement", "accuracy", "accuracy_transformed"}
    for metric, r in paired.items():
        assert r["n_images"] == 2 and r["delta_low"] <= r["delta"] <= r["delta_high"], metric
        same = {"rel": 1e-6, "abs": 1e-9}  # the per-image means re-derive the evaluation's own
        assert r["base"] == pytest.approx(models["grpo"][metric], **same)
        assert r["arm"] == pytest.approx(models["dc_dr"][metric], **same)
    for name in ("base", "grpo_seed0_steps1", "dc_dr_seed0_steps1"):
        assert (out / "eval" / name / "metrics.json").exists(), name
    for run in ("grpo_seed0_steps1", "dc_dr_seed0_steps1"):
        assert [step for step, _ in metric_series(out / "rl" / run / "metrics.jsonl", "critic/score/mean")] == [1]
        # every run starts from the shipped base
        marker = json.loads((out / ".done" / f"rl_{run}.json").read_text())
        assert marker["env"]["MODEL_DIR"] == str(REPO / "recipe" / "domain_grpo" / "assets" / "digits_upright_base")
    png = (out / "demo.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    # the console ends with the markdown tables (the same as summary.md)
    table = (out / "summary.md").read_text().strip()
    assert table.startswith("Tiny CPU model, one seed: a check of the machinery") and "| model |" in table
    assert "GRPO + DC + DR" in table and "Paired on the same 2 held-out" in table
    assert "Invariance gap" in table and "upright-SFT base" in table
    assert proc.stdout.rstrip().endswith(table.splitlines()[-1])
    # a rerun with the same settings skips every step
    again = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "running" not in again.stdout and again.stdout.count("done before, skipped") >= 6
