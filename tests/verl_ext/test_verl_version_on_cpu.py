"""verl_ext.verl_version: REQUIRED_VERL.txt parsing and the once-only warning on an untested verl."""

import logging
from pathlib import Path

import pytest

from verl_ext import verl_version
from verl_ext.verl_version import installed_verl_version, read_required_verl, warn_if_untested_verl

REPO = Path(__file__).resolve().parents[2]
RECIPES = ("domain_grpo", "novel_task", "pivot")


@pytest.fixture(autouse=True)
def _fresh_warning_memory(monkeypatch):
    monkeypatch.setattr(verl_version, "_WARNED", set())


def _required(tmp_path, text: str) -> Path:
    path = tmp_path / "REQUIRED_VERL.txt"
    path.write_text(text)
    return path


@pytest.mark.parametrize("recipe", RECIPES)
def test_each_recipe_declares_the_installed_verl(recipe):
    path = REPO / "recipe" / recipe / "REQUIRED_VERL.txt"
    assert read_required_verl(path)["VERL_VERSION"] == installed_verl_version() == "0.9.1"
    assert warn_if_untested_verl(path) is None
    assert "Refresh:" in path.read_text()  # says how to refresh it


def test_warns_once_naming_the_tested_version(tmp_path, caplog):
    path = _required(tmp_path, "# tested\nVERL_VERSION=0.9.1\nVERL_COMMIT=abc123\n")
    with caplog.at_level(logging.WARNING, logger="verl_ext.verl_version"):
        first = warn_if_untested_verl(path, installed="0.10.0.dev")
        second = warn_if_untested_verl(path, installed="0.10.0.dev")
    assert first == second
    assert "verl 0.10.0.dev is installed" in first and "tested with verl 0.9.1 (commit abc123)" in first
    assert [r.getMessage() for r in caplog.records] == [first]  # logged once


def test_same_version_is_silent_and_a_missing_verl_is_named(tmp_path, caplog, monkeypatch):
    path = _required(tmp_path, "VERL_VERSION=0.9.1\n")
    with caplog.at_level(logging.WARNING, logger="verl_ext.verl_version"):
        assert warn_if_untested_verl(path, installed="0.9.1") is None
    assert not caplog.records
    monkeypatch.setattr(verl_version, "installed_verl_version", lambda: None)
    message = warn_if_untested_verl(path)
    assert message.startswith("verl not found is installed, but this recipe was tested with verl 0.9.1 (")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("VERL_COMMIT=abc\n", "no VERL_VERSION"),
        ("VERL_VERSION=\n", "no VERL_VERSION"),
        ("VERL_VERSION 0.9.1\n", ":1: expected KEY=VALUE"),
        ("# ok\n=0.9.1\n", ":2: expected KEY=VALUE"),
    ],
)
def test_malformed_files_are_refused_with_file_and_line(tmp_path, text, error):
    with pytest.raises(ValueError, match=error):
        read_required_verl(_required(tmp_path, text))


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.txt: no such REQUIRED_VERL.txt"):
        warn_if_untested_verl(tmp_path / "nowhere.txt")
