"""The PIVOT study end to end on CPU, one run shared by every check (tiny random Qwen2.5-VL, real Sentinel-2 tiles):
pairs -> verl's SFT trainer and DPO through verl's RL loop (both pair sources in one run) -> probes -> transplant ->
projector / projector + LLM stages with the encoder frozen -> evaluation -> report. 2 optimiser steps per stage.

Run it under the machine-wide heavy lock (it starts verl's Ray loop once):
    flock /tmp/verl-heavy.lock env PYTHONPATH=$PWD python -m pytest tests/recipe/pivot/test_pivot_study_on_cpu.py
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from verl_ext.vision_freeze import part_of

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[3]
SPEC = REPO / "recipe" / "pivot" / "study" / "cpu_tiny.yaml"
ENCODERS = ("base", "sft", "dpo")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from verl_ext.cpu.tiny_qwen25vl import build_tiny_model_dir

    root = tmp_path_factory.mktemp("pivot")
    model = build_tiny_model_dir(root / "model")
    data = root / "s2"
    subprocess.run([sys.executable, "-m", "data_prep", "demo-rs", "--out", str(data), "--no-progress"], check=True)
    sets = {
        "base": model,
        "train": data / "train.parquet",
        "test": data / "test.parquet",
        "out": root / "study",
        # both pair sources in one DPO run: session 0/1 = the row's chosen/rejected text, sessions 2-5 sampled and
        # paired online; the coin reward lets a random model's samples be "correct" half of the time
        "dpo_source": "mixed",
        "rollout_n": "6",
        "reward": REPO / "tests" / "recipe" / "pivot" / "coin_reward.py",
        "dpo_extra": "[actor_rollout_ref.actor.optim.weight_decay=0.0]",
    }
    argv = [sys.executable, "-m", "recipe.pivot.study", "--spec", str(SPEC), "--jobs", "2"]
    for key, value in sets.items():
        argv += ["--set", f"{key}={value}"]
    start = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=3000)
    took = time.monotonic() - start
    print(f"study on CPU in {took:.0f} s")
    out = root / "study"
    logs = "".join(p.read_text()[-3000:] for p in sorted((out / "logs").glob("*.log"))[-2:])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + logs
    again = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=600)
    return {"out": out, "model": model, "rerun": again, "seconds": took}


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")


def _changed(a: dict, b: dict) -> dict[str, int]:
    out = {"vision_tower": 0, "projector": 0, "language_model": 0}
    for name, tensor in a.items():
        out[part_of(name)] += int(not torch.equal(tensor, b[name]))
    return out


def _final(ckpt: Path) -> Path:
    from recipe.common.runs import final_hf

    found = final_hf(ckpt)
    assert found is not None, f"no HF weights under {ckpt}"
    return found


def test_dpo_through_verl_with_both_pair_sources(study):
    from recipe.common.runs import read_metrics

    metrics = read_metrics(study["out"] / "dpo" / "metrics.jsonl")
    assert sorted(metrics) == [1, 2]
    for m in metrics.values():
        assert m["dpo/pairs_offline"] == 2.0  # 2 prompts per batch, each an offline pair
        assert m["dpo/pairs"] == m["dpo/pairs_offline"] + m["dpo/pairs_online"]
        assert m["dpo/prompts_online"] == 2.0 and m["dpo/update_skipped"] == 0.0
        # the chosen texts (teacher-forced, and the online correct samples) score correct under the real reward; the
        # rejected ones wrong: the texts went through tokenisation, TransferQueue and the reward loop intact
        assert (m["dpo/chosen_acc"], m["dpo/rejected_acc"]) == (1.0, 0.0)
        assert m["actor/grad_norm"] > 0 and math.isfinite(m["dpo/reward_margin"])
        assert m["dpo/truncated"] == 0.0
    assert sum(m["dpo/pairs_online"] for m in metrics.values()) >= 1  # own samples formed pairs
    # step 1: π = π_ref, so Δ = 0: loss log 2, margin 0, accuracy 0 (ties count 0); step 2 moved away from the reference
    assert metrics[1]["dpo/loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert metrics[1]["dpo/reward_margin"] == pytest.approx(0.0, abs=1e-6)
    assert metrics[2]["dpo/loss"] != pytest.approx(math.log(2), abs=1e-6)


def test_dpo_and_sft_train_the_whole_model_encoder_included(study):
    base = _weights(study["model"])
    for name in ("dpo", "sft"):
        changed = _changed(base, _weights(_final(study["out"] / name)))
        assert all(n > 0 for n in changed.values()), f"{name} left a part unchanged: {changed}"


def test_transplant_and_stages_freeze_what_they_should(study):
    base = _weights(study["model"])
    for enc in ENCODERS:
        pivot = study["out"] / f"pivot_{enc}"
        donor = base if enc == "base" else _weights(_final(study["out"] / enc))
        moved = _weights(pivot / "transplant")
        vision = [k for k in base if part_of(k) == "vision_tower"]
        assert all(torch.equal(moved[k], donor[k]) for k in vision)  # the evolved encoder
        assert _changed(base, moved)["projector"] > 0 and _changed(base, moved)["language_model"] == 0
        stage1 = _weights(_final(pivot / "stage1"))
        assert _changed(moved, stage1) == {"vision_tower": 0, "projector": 5, "language_model": 0}
        stage2 = _weights(_final(pivot / "stage2"))
        c2 = _changed(stage1, stage2)
        assert c2["vision_tower"] == 0 and c2["projector"] > 0 and c2["language_model"] > 0


def test_probes_report_and_resume(study):
    out = study["out"]
    probes = json.loads((out / "probes" / "probes.json").read_text())
    for model in ("random", "base", "sft", "dpo"):
        assert set(probes[model]) == {"linear", "segmentation"}
        for res in probes[model]["linear"].values():
            assert all(0.0 <= b["test"] <= 1.0 for b in res["blocks"].values())
    assert set(probes["weights"]) == {"sft", "dpo"} and probes["weights"]["dpo"]["block_0"] > 0
    report = (out / "report" / "results.md").read_text()
    assert "prove the pipeline, not the paper" in report
    for text in ("random (floor)", "DPO − SFT", "transplanted", "Reference: PIVOT", "+1.8 to +2.0", "dpo/loss"):
        assert text in report
    for png in ("accuracy.png", "dpo_curves.png", "gradmaps.png", "segmentation.png", "weight_change.png"):
        assert (out / "report" / png).stat().st_size > 1000, png
    assert len(list((out / "eval").glob("*/metrics.json"))) == 6
    assert study["rerun"].returncode == 0 and "0 stages run" in study["rerun"].stdout
