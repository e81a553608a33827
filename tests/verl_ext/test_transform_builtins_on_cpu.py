"""The transform registry's built-ins do not depend on import order, and evaluation's default views include the
transforms a user registers (each in a fresh interpreter: the registry is process-wide)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILTINS = ["identity", "rot90", "rot180", "rot270", "hflip", "vflip", "transpose", "transverse", "hed_jitter"]
DEFAULT_VIEWS = """
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
from verl_ext import transforms
from types import SimpleNamespace as Row
from verl_ext.evaluation.runner import default_transforms
print(",".join(transforms.TRANSFORM_NAMES))
rows = [Row(transforms=["identity", "hed_jitter", "rot90"])]
print(",".join(default_transforms(rows)))
"""


def _run(code: str, *modules: str) -> list[str]:
    result = subprocess.run([sys.executable, "-c", code, *modules], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-2:]


@pytest.mark.parametrize("first", ["verl_ext.transforms", "verl_ext.priors.stain", "verl_ext.evaluation.runner"])
def test_builtins_and_default_views_whatever_is_imported_first(first: str) -> None:
    # Old code: importing the stain module first left hed_jitter out of TRANSFORM_NAMES and so out of the views.
    names, views = _run(DEFAULT_VIEWS, first)
    assert names.split(",") == BUILTINS
    assert views.split(",") == ["rot90", "hed_jitter"]  # identity is the reference view, never a default view


def test_evaluations_default_views_include_a_registered_transform() -> None:
    code = """
import torch
from verl_ext.transforms import register_transform
from types import SimpleNamespace as Row
from verl_ext.evaluation.runner import default_transforms
register_transform("invert", lambda image, generator=None: 1.0 - image, kind="photometric")
rows = [Row(transforms=["invert", "vflip"])]
print("-")
print(",".join(default_transforms(rows)))
"""
    _, views = _run(code)
    assert views.split(",") == ["vflip", "invert"]  # built-ins first, then registration order
