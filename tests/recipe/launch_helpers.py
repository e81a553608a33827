"""Helpers for the launch-script and method tests: run a script with a stub interpreter, compose its config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO / "recipe" / "domain_grpo" / "config"
ENTRY = ["-m", "recipe.domain_grpo.main_domain_grpo"]
RS_WHITELIST = ["identity", "rot90", "rot180", "rot270", "hflip", "vflip"]


def write_rows(path: Path, whitelist: list[str], n: int = 3, split: str = "train") -> str:
    """A tiny verl parquet with the columns start-up validation reads (extra_info.transforms)."""
    rows = [{"extra_info": {"index": i, "split": split, "transforms": whitelist}} for i in range(n)]
    pd.DataFrame(rows).to_parquet(path)
    return str(path)


def script_calls(script: str, tmp_path: Path, env: dict[str, str], *args: str) -> list[list[str]]:
    """Run `examples/<script>` with PYTHON = a stub that records its argv; return every call's argv."""
    out = tmp_path / "argv.jsonl"
    out.unlink(missing_ok=True)
    stub = tmp_path / "python_stub"
    record = f"import json, sys\nwith open({str(out)!r}, 'a') as f:\n    f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
    stub.write_text(f"#!{sys.executable}\n{record}")
    stub.chmod(0o755)
    full_env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "PYTHON": str(stub), **env}
    subprocess.run(["bash", str(REPO / "examples" / script), *args], env=full_env, check=True, cwd=tmp_path)
    return [json.loads(line) for line in out.read_text().splitlines()]


def script_argv(script: str, tmp_path: Path, env: dict[str, str], *args: str) -> list[str]:
    """The argv of the script's last interpreter call (the trainer)."""
    return script_calls(script, tmp_path, env, *args)[-1]


def compose_run(overrides: list[str], config_dir: Path = CONFIG_DIR, name: str = "domain_grpo_trainer") -> DictConfig:
    """The full run config as the entry point would see it (Hydra's compose API, no launch)."""
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        return compose(config_name=name, overrides=overrides)
