"""Shared helpers of the PIVOT recipe tests: compose the DPO config, write tiny pair parquets."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[3]
CONFIG_DIR = REPO / "recipe" / "pivot" / "config"
sys.path.insert(0, str(REPO / "tests" / "recipe"))

from launch_helpers import compose_run, script_argv  # noqa: E402


def dpo_config(overrides: list[str]):
    """The DPO run config as the entry point sees it (no launch)."""
    return compose_run(["actor_rollout_ref.model.path=/unused", *overrides], CONFIG_DIR, "pivot_dpo")


def write_pairs(path: Path, pairs: list[tuple[str, str]]) -> str:
    """A parquet with only the columns the start-up check reads."""
    pd.DataFrame([{"chosen": c, "rejected": r} for c, r in pairs]).to_parquet(path)
    return str(path)


__all__ = ["REPO", "CONFIG_DIR", "compose_run", "script_argv", "dpo_config", "write_pairs"]
