"""The study runner (resumable, stops at a failure, one-argument tokens) and the report (table, reference rows,
ordering, pictures) on hand-made inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recipe.domain_grpo.experiments.matrix import SpecError
from recipe.novel_task.report import markdown, ordering_line, write_report
from recipe.novel_task.study import main, run_study


def _spec(tmp_path: Path, fail: bool = False) -> dict:
    touch = "import pathlib, sys; pathlib.Path(sys.argv[1]).write_text(sys.argv[2])"
    return {
        "vars": {"value": "a b; $(rm -rf x)"},  # shell characters stay inside one argument
        "steps": [
            {"name": "one", "run": f"{{python}} -c '{touch}' {{output_root}}/one.txt {{value}}"},
            {"name": "two", "run": "{python} -c 'import sys; sys.exit(3)'" if fail else "{python} -c 'pass'"},
            {
                "name": "three",
                "run": f"{{python}} -c '{touch}' {{output_root}}/three.txt {{value}}",
                "env": {"X": "{value}"},
            },
        ],
        "report": {"out": "{output_root}/report", "methods": {}},
    }


def test_runner_is_resumable_and_stops_at_a_failure(tmp_path):
    lines: list[str] = []
    assert run_study(_spec(tmp_path, fail=True), str(tmp_path), echo=lines.append) == 1
    assert (tmp_path / "one.txt").read_text() == "a b; $(rm -rf x)" and not (tmp_path / "three.txt").exists()
    assert any("FAILED with exit code 3" in line for line in lines)
    lines.clear()
    assert run_study(_spec(tmp_path), str(tmp_path), echo=lines.append) == 0
    assert "[one] done before, skipped" in lines and (tmp_path / "three.txt").exists()
    assert (tmp_path / "report" / "report.md").exists()
    assert json.loads((tmp_path / ".study" / "three.done.json").read_text())["env"] == {"X": "a b; $(rm -rf x)"}


def test_cli_spec_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [{name: a}]\nreport: {}\n")
    assert main(["--spec", str(bad)]) == 2 and "needs 'name' and 'run'" in capsys.readouterr().err
    with pytest.raises(SpecError):
        run_study({**_spec(tmp_path), "vars": {"python": "x"}}, str(tmp_path))


def _eval(root: Path, task: str, metrics: dict) -> None:
    (root / task).mkdir(parents=True, exist_ok=True)
    (root / task / "metrics.json").write_text(json.dumps(metrics))


def _delta(d: float, lo: float, hi: float) -> dict:
    return {"delta": d, "ci_low": lo, "ci_high": hi, "n": 100}


def _forgetting(path: Path, delta: float) -> None:
    task = {
        "kind": "classification",
        "accuracy": _delta(delta, delta - 0.05, delta + 0.05),
        "valid_rate": _delta(0.0, -0.01, 0.01),
        "answer_dist_accuracy": _delta(0.0, -0.02, 0.02),
        "answer_js": 0.01,
        "reading": "x",
    }
    path.write_text(json.dumps({"easy_vqa": task, "jigsaw": {"kind": "jigsaw"}}))


def test_report_table_reference_rows_and_pictures(tmp_path):
    _eval(tmp_path / "base", "jigsaw", {"exact": 0.0, "hit": 0.25, "valid_rate": 0.5, "mean_reward": 0.75})
    methods = {}
    for name, delta, exact in (("grpo", -0.01, 0.30), ("sft", -0.40, 0.60), ("sft_rollouts", -0.05, 0.55)):
        _eval(tmp_path / name, "jigsaw", {"exact": exact, "hit": 0.7, "valid_rate": 1.0, "mean_reward": 2.0})
        _forgetting(tmp_path / f"{name}.json", delta)
        methods[name] = {
            "label": name.upper(),
            "step": 2,
            "eval": str(tmp_path / name),
            "forgetting": str(tmp_path / f"{name}.json"),
        }
    (tmp_path / "lik.json").write_text(json.dumps({"datasets": {"sft": {"mean_token_logprob": -3.5, "n": 9}}}))
    log = tmp_path / "grpo.jsonl"
    log.write_text('{"step": 1, "data": {"critic/score/mean": 0.5}}\n{"step": 2, "data": {"critic/score/mean": 0.9}}\n')
    methods["grpo"]["train_log"] = str(log)
    report = {
        "out": str(tmp_path / "r"),
        "base_eval": str(tmp_path / "base"),
        "likelihood": str(tmp_path / "lik.json"),
        "methods": methods,
    }
    paths = write_report(report)
    text = paths["table"].read_text()
    assert "| GRPO | 30.0 | 70.0 | 100.0 | -1.0 [-6.0, +4.0] | -1.0 | – |" in text
    assert "| SFT | 60.0 | 70.0 | 100.0 | -40.0 [-45.0, -35.0] | -40.0 | -3.500 |" in text
    assert "| GRPO (paper) | -0.6 | +1.7 |" in text and "| SFT (paper) | -57.2 | -62.8 |" in text
    assert "ours grpo > sft_rollouts > sft" in text and "same ordering" in text
    for kind in ("reward_per_step", "prior_delta", "new_vs_forgetting"):
        assert paths[kind].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads(paths["results"].read_text())
    assert results["methods"]["grpo"]["curve"] == [[0, 0.75], [2, 2.0]]
    assert results["methods"]["grpo"]["train_reward"] == [[1, 0.5], [2, 0.9]]
    assert "jigsaw" not in results["prior_tasks"]  # the new task is not a prior task
    assert markdown({**results, "methods": {}}).startswith("# Novel task")
    tied = ordering_line({"grpo": 0.0, "sft_rollouts": 0.0, "sft": -0.1})
    assert "ours grpo = sft_rollouts > sft" in tied and "tied: no ordering" in tied
    assert "different ordering" in ordering_line({"grpo": -0.5, "sft_rollouts": 0.0, "sft": -0.1})
