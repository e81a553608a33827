"""The PIVOT study report: probe intervals and the floor over seeds, DPO − SFT per training seed, the first line of a
CPU run (a machinery check unless an interval excludes zero), the dry run's skeleton, the paper's reference rows."""

from __future__ import annotations

import json
from pathlib import Path

from recipe.pivot.study.report import MACHINERY_LINE, write_report


def _stat(value: float, lo: float, hi: float) -> dict:
    return {"value": value, "ci_low": lo, "ci_high": hi, "n_items": 230, "n_clusters": 230}


def _probes(path: Path, diff: tuple[float, float, float]) -> None:
    blocks = {"1": {"test": 0.7, "val": 0.7, "train": 0.8, "c": 1.0}}
    rows = {m: {"linear": {"s2-ndvi4": {"blocks": blocks, "majority": 0.25}}} for m in ("random", "base", "sft", "dpo")}
    intervals = {m: _stat(0.7, 0.65, 0.75) for m in ("base", "sft", "dpo", "colour mean+std")}
    intervals["dpo-sft"] = _stat(*diff)
    floor = {"s2-ndvi4": {"mean": 0.76, "std": 0.025, "seeds": 3, "values": [0.73, 0.76, 0.79]}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**rows, "intervals": {"s2-ndvi4": intervals}, "floor": floor}))


def _spec(machinery: bool) -> dict:
    v = {"base": "/m", "train": "t", "test": "v", "machinery_check": machinery, "train_seeds": [0, 1, 2]}
    return {"vars": v, "encoders": ["base", "sft", "dpo"]}


def test_cpu_report_is_a_machinery_check_with_intervals_and_seed_spread(tmp_path):
    _probes(tmp_path / "probes" / "probes.json", (0.01, -0.03, 0.05))
    _probes(tmp_path / "seed_1" / "probes" / "probes.json", (0.02, -0.02, 0.06))
    _probes(tmp_path / "seed_2" / "probes" / "probes.json", (0.03, -0.01, 0.07))
    text = write_report(_spec(True), tmp_path).read_text()
    assert text.splitlines()[0].startswith(MACHINERY_LINE)
    assert "| s2-ndvi4 | 0.700 [0.650, 0.750] | 0.760 ± 0.025 (3 seeds) |" in text
    assert "| +0.010 [-0.030, +0.050] |" in text  # DPO − SFT with its interval
    # DPO − SFT over the three training seeds: mean 0.02, std 0.01
    assert (
        "| s2-ndvi4 | +0.010 [-0.030, +0.050] | +0.020 [-0.020, +0.060] | +0.030 [-0.010, +0.070] | +0.020 ± 0.010"
        in text
    )
    assert "SigLIP2-So400m" in text and "weight decay 0" in text and "Qwen2.5-1.5B" in text


def test_a_difference_whose_interval_excludes_zero_is_stated_with_n_and_seed(tmp_path):
    _probes(tmp_path / "probes" / "probes.json", (0.05, 0.02, 0.08))
    first = write_report(_spec(True), tmp_path).read_text().splitlines()[0]
    assert "only these differences" in first and "s2-ndvi4: dpo − sft +0.050 [+0.020, +0.080]" in first
    assert "n = 230 test items in 230 units, training seed 0" in first
    assert not write_report(_spec(False), tmp_path).read_text().startswith("**A CPU run")


def test_dry_run_writes_the_planned_skeleton(tmp_path):
    text = write_report(_spec(False), tmp_path, planned=True).read_text()
    assert "Planned report (dry run)" in text and "## Encoder probes (planned)" in text
    assert "| s2-greener-half | — | — | — | — | — | — |" in text and "training seeds [0, 1, 2]" in text
