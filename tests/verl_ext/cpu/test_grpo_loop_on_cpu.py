"""End to end: verl 0.9.1's own GRPO loop (v1 trainer, engine workers, agent loop, TransferQueue, reward loop) on CPU.

Runs ``recipe.domain_grpo.main_domain_grpo stand_in=cpu_tiny`` for two steps in a subprocess with the tiny random
Qwen2.5-VL and a six-row image parquet, then checks verl's file-logger metrics and the step-2 HF checkpoint.
About 2 minutes and ~8 GB RAM on 2 cores.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from verl_ext.cpu.tiny_qwen25vl import build_tiny_model_dir
from verl_ext.cpu.tiny_task import build_tiny_task

REPO = Path(__file__).resolve().parents[3]
TIMEOUT_S = 900
STEPS = 2


def _run_training(tmp_path: Path) -> tuple[subprocess.CompletedProcess, float]:
    model_dir = build_tiny_model_dir(tmp_path / "model")
    train, val = build_tiny_task(tmp_path / "data")
    command = [
        sys.executable,
        "-m",
        "recipe.domain_grpo.main_domain_grpo",
        "stand_in=cpu_tiny",
        "algorithm.adv_estimator=grpo",
        f"actor_rollout_ref.model.path={model_dir}",
        f"data.train_files={train}",
        f"data.val_files={val}",
        f"reward.custom_reward_function.path={REPO / 'verl_ext/cpu/tiny_task.py'}",
        "reward.custom_reward_function.name=compute_dense_score",
        f"trainer.total_training_steps={STEPS}",
        f"trainer.save_freq={STEPS}",
        f"trainer.default_local_dir={tmp_path / 'ckpt'}",
        "actor_rollout_ref.actor.checkpoint.save_contents=[model,hf_model]",
        # no weight decay: any weight that changed was moved by a gradient
        "actor_rollout_ref.actor.optim.weight_decay=0.0",
        f"hydra.run.dir={tmp_path / 'hydra'}",
    ]
    env = dict(os.environ, VERL_FILE_LOGGER_PATH=str(tmp_path / "metrics.jsonl"), PYTHONUNBUFFERED="1")
    start = time.monotonic()
    # Own session: on timeout the whole tree (Ray's local cluster included) is killed.
    proc = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"training did not finish in {TIMEOUT_S} s; log tail:\n{out[-4000:]}")
    (tmp_path / "train.log").write_text(out)
    return subprocess.CompletedProcess(command, proc.returncode, out), time.monotonic() - start


def _metrics(path: Path) -> dict[int, dict]:
    steps = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        steps[record["step"]] = record["data"]
    return steps


@pytest.mark.slow
def test_two_grpo_steps_train_the_actor(tmp_path: Path) -> None:
    result, wall = _run_training(tmp_path)
    print(f"two GRPO steps on CPU: {wall:.0f} s")
    assert result.returncode == 0, result.stdout[-6000:]

    metrics = _metrics(tmp_path / "metrics.jsonl")
    assert sorted(metrics) == list(range(1, STEPS + 1))
    for step, values in metrics.items():
        for key in ("actor/pg_loss", "actor/grad_norm", "actor/entropy", "critic/score/mean", "critic/advantages/max"):
            assert key in values, f"step {step} lacks {key}"
            assert math.isfinite(values[key]), f"step {step}: {key}={values[key]}"
        # the dense reward differs between samples, so GRPO's advantages and the gradient are not zero
        assert values["critic/advantages/max"] > 0
        assert values["actor/grad_norm"] > 0
        # the rollout (transformers generate, weights synced from FSDP) samples from the actor's distribution
        assert values["training/rollout_actor_probs_pearson_corr"] > 0.99

    initial = load_file(Path(build_tiny_model_dir(tmp_path / "model")) / "model.safetensors")
    trained = load_file(tmp_path / "ckpt" / f"global_step_{STEPS}" / "actor" / "huggingface" / "model.safetensors")
    assert set(trained) >= set(initial) - {"lm_head.weight"}
    assert all(torch.isfinite(tensor).all() for tensor in trained.values())
    changed = [name for name in initial if name in trained and not torch.equal(initial[name], trained[name])]
    assert len(changed) > len(initial) // 2, f"only {len(changed)} of {len(initial)} tensors changed"
