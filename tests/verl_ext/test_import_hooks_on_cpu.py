"""``when_imported``: callbacks run once, right after the target module's body, or at once if it is imported."""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

import pytest

from verl_ext.import_hooks import when_imported


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"hook_target_{tmp_path.name.replace('-', '_')}"
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text("")
    (tmp_path / name / "registry.py").write_text("ENTRIES = []\n\ndef describe():\n    return 'registry'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    for module in [m for m in sys.modules if m.startswith(name)]:
        del sys.modules[module]


def test_callback_runs_after_the_module_body_once(package: str) -> None:
    seen = []
    when_imported(f"{package}.registry", lambda module: seen.append(list(module.ENTRIES)) or module.ENTRIES.append(1))
    assert seen == []
    module = importlib.import_module(f"{package}.registry")
    assert seen == [[]] and module.ENTRIES == [1]
    importlib.reload(module)  # a reload is not a new import: the callback is not run again
    assert seen == [[]]
    assert "def describe" in inspect.getsource(module.describe)


def test_callback_runs_at_once_for_an_imported_module(package: str) -> None:
    module = importlib.import_module(f"{package}.registry")
    seen = []
    when_imported(f"{package}.registry", seen.append)
    assert seen == [module]
