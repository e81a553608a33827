"""Test-wide settings (everything offline and deterministic) and the fixture that runs verl's loop on CPU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "WANDB_MODE": "disabled",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_key, _value)

REPO = Path(__file__).resolve().parents[1]
LOOP_TIMEOUT_S = 900
# verl reads these in every process it starts; one test that leaves them set (recipe.common.entry.run exports the
# config's plugin env into os.environ) changes what later tests' subprocesses import (CI: upstream/prove_patch.py's
# verl trees, started with VERL_PLATFORM=cpu and no verl_ext, failed to collect).
PROCESS_WIDE_ENV = ("VERL_PLATFORM", "VERL_USE_EXTERNAL_MODULES")


@pytest.fixture(autouse=True)
def _no_leaked_plugin_env():
    """Fail the test that leaves verl's plugin env changed (use monkeypatch.setenv), and restore it for the next."""
    before = {key: os.environ.get(key) for key in PROCESS_WIDE_ENV}
    yield
    after = {key: os.environ.get(key) for key in PROCESS_WIDE_ENV}
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    leaked = {key: after[key] for key in PROCESS_WIDE_ENV if after[key] != before[key]}
    assert not leaked, f"the test changed {leaked} in os.environ and left it so; set it with monkeypatch.setenv"


def _run_tiny_training(
    tmp_path: Path, steps: int, overrides: list[str], data: tuple[Path, Path] | None = None
) -> tuple[subprocess.CompletedProcess, dict]:
    """Run `recipe.domain_grpo.main_domain_grpo stand_in=cpu_tiny` for `steps` steps with the tiny model.

    `data` is (train, val) parquet; by default the tiny synthetic task. Returns the finished process (output in
    `.stdout`) and verl's file-logger metrics as {step: {key: value}}.
    """
    from verl_ext.cpu.tiny_qwen25vl import build_tiny_model_dir
    from verl_ext.cpu.tiny_task import build_tiny_task

    model_dir = build_tiny_model_dir(tmp_path / "model")
    train, val = data or build_tiny_task(tmp_path / "data")
    command = [
        sys.executable,
        "-m",
        "recipe.domain_grpo.main_domain_grpo",
        "stand_in=cpu_tiny",
        f"actor_rollout_ref.model.path={model_dir}",
        f"data.train_files={train}",
        f"data.val_files={val}",
        f"reward.custom_reward_function.path={REPO / 'verl_ext/cpu/tiny_task.py'}",
        "reward.custom_reward_function.name=compute_dense_score",
        f"trainer.total_training_steps={steps}",
        f"trainer.default_local_dir={tmp_path / 'ckpt'}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        *overrides,
    ]
    metrics_path = tmp_path / "metrics.jsonl"
    env = dict(os.environ, VERL_FILE_LOGGER_PATH=str(metrics_path), PYTHONUNBUFFERED="1")
    start = time.monotonic()
    # Own session: on timeout the whole tree (Ray's local cluster included) is killed.
    proc = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=LOOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"training did not finish in {LOOP_TIMEOUT_S} s; log tail:\n{out[-4000:]}")
    (tmp_path / "train.log").write_text(out)
    print(f"{steps} steps on CPU in {time.monotonic() - start:.0f} s")
    from recipe.common.runs import read_metrics

    metrics = read_metrics(metrics_path)
    return subprocess.CompletedProcess(command, proc.returncode, out), metrics


@pytest.fixture
def run_tiny_training() -> Callable[..., tuple[subprocess.CompletedProcess, dict]]:
    """`run_tiny_training(tmp_path, steps, overrides, data=None)`: verl's loop on CPU, tiny Qwen2.5-VL."""
    return _run_tiny_training
