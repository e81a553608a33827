"""Every recipe's plugin module installs the verl repairs (recipe.common.plugins); PIVOT's did not before."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
CHECK = """
import importlib, sys
importlib.import_module(sys.argv[1])
from verl.models.transformers import qwen2_vl
print(getattr(qwen2_vl._get_input_embeds, "_domain_rft_fix", False))
"""


@pytest.mark.parametrize("plugins", ["recipe.domain_grpo.plugins", "recipe.pivot.plugins", "recipe.novel_task.plugins"])
def test_each_recipes_plugins_install_the_verl_repairs(plugins: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHECK, plugins], capture_output=True, text=True, cwd=REPO, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "True"
