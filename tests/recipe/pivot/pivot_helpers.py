"""Shared helpers of the PIVOT recipe tests: compose the DPO config, write tiny pair parquets."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[3]
CONFIG_DIR = REPO / "recipe" / "pivot" / "config"
sys.path.insert(0, str(REPO / "tests" / "recipe"))

from launch_helpers import compose_run, script_argv  # noqa: E402


def tiny_model() -> Path:
    """The offline tiny Qwen2.5-VL (tokenizer + processor for the start-up's length checks), built once per user."""
    from verl_ext.cpu.tiny_qwen25vl import build_tiny_model_dir

    return build_tiny_model_dir(Path(tempfile.gettempdir()) / f"domain_rft_pivot_tiny_{os.getuid()}")


def dpo_config(overrides: list[str]):
    """The DPO run config as the entry point sees it (no launch): the tiny model, one row per batch."""
    base = [f"actor_rollout_ref.model.path={tiny_model()}", "data.train_batch_size=1", "data.max_prompt_length=1024"]
    return compose_run([*base, *overrides], CONFIG_DIR, "pivot_dpo")


def write_pairs(path: Path, pairs: list[tuple[str, str]]) -> str:
    """A parquet of the tiny task's rows (prompt + image, verl's schema) with a chosen and a rejected text each."""
    from verl_ext.cpu.tiny_task import make_rows

    rows = [{**row, "chosen": c, "rejected": r} for row, (c, r) in zip(make_rows(len(pairs), "train"), pairs)]
    pd.DataFrame(rows).to_parquet(path)
    return str(path)


__all__ = ["REPO", "CONFIG_DIR", "compose_run", "script_argv", "dpo_config", "write_pairs"]
