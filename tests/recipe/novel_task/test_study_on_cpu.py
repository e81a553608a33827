"""The whole novel-task study on CPU, end to end, with the tiny random Qwen2.5-VL: one verl GRPO loop (2 steps, the
rollout_dump trainer mode), verl's SFT trainer twice (answer-only, correct rollouts; 2 steps each), evaluation of the
base and the three trained models on the 2 x 2 puzzles and two prior tasks of real shipped images, comparison,
likelihood of the training data under the base model, report. One Ray start-up; about 5 minutes on 2 idle cores."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from recipe.common.runs import read_metrics

REPO = Path(__file__).resolve().parents[3]
TIMEOUT_S = 1500
COMPONENTS = {"score", "hit", "acc", "format", "answer_valid", "dense"}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("jigsaw_study")
    spec = REPO / "recipe/novel_task/config/study_cpu.yaml"
    cmd = [sys.executable, "-m", "recipe.novel_task.study", "--spec", str(spec), "--output-root", str(root)]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    try:
        out, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"the study did not finish in {TIMEOUT_S} s:\n{out[-4000:]}")
    logs = "".join(f"\n--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted((root / "logs").glob("*.log")))
    assert proc.returncode == 0, out[-3000:] + logs[-9000:]
    for mark in sorted((root / ".study").glob("*.done.json")):  # the runner's done-markers
        print(f"{mark.name.removesuffix('.done.json'):22s} {json.loads(mark.read_text())['seconds']:6.1f} s")
    return root


@pytest.mark.slow
def test_grpo_dumps_rollouts_with_row_ids_and_reward_components(study):
    train = pd.read_parquet(study / "data/jigsaw/train.parquet")
    indices = set(train["extra_info"].map(lambda e: int(e["index"])))
    for step in (1, 2):
        records = [json.loads(line) for line in (study / f"grpo/rollouts/{step}.jsonl").read_text().splitlines()]
        assert len(records) == 2 * 4  # train_batch_size 2 prompts x rollout.n 4
        for rec in records:
            assert rec["step"] == step and rec["row_index"] in indices and set(rec["reward"]) == COMPONENTS
            assert rec["response_ids"] and rec["response_length"] == len(rec["response_ids"])
            assert (
                rec["gts"]
                == train[train["extra_info"].map(lambda e: e["index"]) == rec["row_index"]].iloc[0]["reward_model"][
                    "ground_truth"
                ]
            )
    metrics = read_metrics(study / "grpo/metrics.jsonl")
    assert sorted(metrics) == [1, 2]
    for m in metrics.values():
        for key in ("reward/hit/mean", "reward/acc/mean", "reward/format/mean", "reward/dense/mean"):
            assert math.isfinite(m[key]), key
        assert m["actor/grad_norm"] > 0  # the dense toy reward gives GRPO a signal


@pytest.mark.slow
def test_sft_on_rollouts_rows_carry_the_training_images(study):
    train = {
        int(r["extra_info"]["index"]): r
        for r in pd.read_parquet(study / "data/jigsaw/train.parquet").to_dict("records")
    }
    dumped = {}
    for path in (study / "grpo/rollouts").glob("*.jsonl"):
        for rec in map(json.loads, path.read_text().splitlines()):
            dumped.setdefault(rec["row_index"], set()).add(rec["output"].strip())
    rows = pd.read_parquet(study / "sft_rollouts/data.parquet").to_dict("records")
    assert len(rows) == json.loads((study / "sft_rollouts/data.parquet.json").read_text())["kept"] > 0
    for row in rows:
        index = int(row["extra_info"]["index"])
        assert row["images"][0]["bytes"] == train[index]["images"][0]["bytes"]
        assert row["messages"][-1]["content"] in dumped[index]
        assert row["messages"][0]["content"] == train[index]["prompt"][0]["content"]


@pytest.mark.slow
def test_every_arm_trained_and_was_evaluated(study):
    base = load_file(study / "tiny-qwen25vl/model.safetensors")
    for ckpt in ("grpo/ckpt/global_step_2/actor/huggingface", "sft/ckpt/final_hf", "sft_rollouts/ckpt/final_hf"):
        trained = load_file(study / ckpt / "model.safetensors")
        assert any(not torch.equal(base[k], trained[k]) for k in base if k in trained), ckpt
    for arm in ("base", "grpo", "sft", "sft_rollouts"):
        for task, key in (("jigsaw", "exact"), ("s2_tiles", "accuracy"), ("easy_vqa", "accuracy")):
            metrics = json.loads((study / arm / "eval" / task / "metrics.json").read_text())
            assert metrics["n"] == 4 and 0.0 <= metrics[key] <= 1.0
    for arm in ("grpo", "sft", "sft_rollouts"):
        forgetting = json.loads((study / arm / "forgetting.json").read_text())
        assert set(forgetting) == {"jigsaw", "s2_tiles", "easy_vqa"}
        for task in ("s2_tiles", "easy_vqa"):
            acc = forgetting[task]["accuracy"]
            assert acc["ci_low"] <= acc["delta"] <= acc["ci_high"] and forgetting[task]["reading"]
    likelihood = json.loads((study / "likelihood.json").read_text())["datasets"]
    assert set(likelihood) == {"sft", "sft_rollouts", "grpo"}
    assert all(math.isfinite(v["mean_token_logprob"]) and v["mean_token_logprob"] < 0 for v in likelihood.values())


@pytest.mark.slow
def test_report_table_and_pictures(study):
    text = (study / "report/report.md").read_text()
    for label in (
        "| base |",
        "| GRPO |",
        "| answer-only SFT |",
        "| SFT on GRPO rollouts |",
        "GRPO (paper) | -0.6 | +1.7",
    ):
        assert label in text
    assert "Δ s2_tiles [95% CI]" in text and "Δ easy_vqa [95% CI]" in text and "ordering" in text
    for png in ("reward_per_step", "prior_delta", "new_vs_forgetting"):
        assert (study / f"report/{png}.png").read_bytes()[:4] == b"\x89PNG"
    results = json.loads((study / "report/results.json").read_text())
    assert [p[0] for p in results["methods"]["sft"]["curve"]] == [0, 2]


@pytest.mark.slow
def test_a_rerun_skips_every_step_and_another_model_reruns_what_names_it(study):
    spec = REPO / "recipe/novel_task/config/study_cpu.yaml"
    argv = [sys.executable, "-m", "recipe.novel_task.study", "--spec", str(spec), "--output-root", str(study)]
    argv += ["--dry-run"]
    same = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    # nothing changed: no step's command or inputs differ from what produced its marker (no later step rewrote them)
    assert same.returncode == 0 and "would run" not in same.stdout, same.stdout + same.stderr
    assert same.stdout.count("done before, skipped") == 17
    other = subprocess.run([*argv, "--set", f"model={study}/another-model"], cwd=REPO, capture_output=True, text=True)
    assert other.returncode == 0, other.stderr
    for step in ("model", "base_eval", "grpo", "sft", "sft_rollouts", "likelihood"):  # the steps naming {model}
        assert f"[{step}] would run (command changed: argv[" in other.stdout, other.stdout
    assert "[data_s2] done before, skipped" in other.stdout
    typo = subprocess.run([*argv, "--set", "modle=x"], cwd=REPO, capture_output=True, text=True)
    assert typo.returncode == 2 and "--set modle: unknown name; known: batch, compare, data, eval" in typo.stderr
