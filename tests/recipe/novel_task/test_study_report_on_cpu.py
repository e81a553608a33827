"""The study runner (resumable, stops at a failure, one-argument tokens) and the report (table, reference rows,
ordering, pictures) on hand-made inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recipe.domain_grpo.experiments.matrix import SpecError
from recipe.novel_task.report import MACHINERY_LINE, markdown, ordering_line, write_report
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


def _predictions(root: Path, task: str, correct: list[bool]) -> None:
    (root / task).mkdir(parents=True, exist_ok=True)
    rows = [{"index": i, "view": "identity", "label": "a", "prediction": "ab"[not c]} for i, c in enumerate(correct)]
    (root / task / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _study(tmp_path: Path, correct_rows: dict[str, int], n_rows: int = 40) -> dict:
    _eval(tmp_path / "base", "jigsaw", {"exact": 0.0, "hit": 0.25, "valid_rate": 0.5, "mean_reward": 0.75, "n": 4})
    truths = ["2 1\n4 3", "2 1\n4 3", "2 1\n3 4", "1 2\n4 3"]
    jig = [{"index": i, "label": t, "acc": 0.0, "hit": 0.0, "answer_valid": 0.0} for i, t in enumerate(truths)]
    (tmp_path / "base" / "jigsaw" / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in jig))
    methods = {}
    for name, delta, exact in (("grpo", -0.01, 0.30), ("sft", -0.40, 0.60), ("sft_rollouts", -0.05, 0.55)):
        _eval(tmp_path / name, "jigsaw", {"exact": exact, "hit": 0.7, "valid_rate": 1.0, "mean_reward": 2.0})
        _predictions(tmp_path / name, "easy_vqa", [i < correct_rows[name] for i in range(n_rows)])
        _forgetting(tmp_path / f"{name}.json", delta)
        methods[name] = {
            "label": name.upper(),
            "step": 2,
            "eval": str(tmp_path / name),
            "forgetting": str(tmp_path / f"{name}.json"),
        }
    return methods


def test_report_table_reference_rows_and_pictures(tmp_path):
    # easy_vqa rows right out of 40: GRPO 38, SFT-on-rollouts 20, SFT 2 -> each adjacent pair separated
    methods = _study(tmp_path, {"grpo": 38, "sft_rollouts": 20, "sft": 2})
    (tmp_path / "lik.json").write_text(json.dumps({"datasets": {"sft": {"mean_token_logprob": -3.5, "n": 9}}}))
    log = tmp_path / "grpo.jsonl"
    log.write_text('{"step": 1, "data": {"critic/score/mean": 0.5}}\n{"step": 2, "data": {"critic/score/mean": 0.9}}\n')
    methods["grpo"]["train_log"] = str(log)
    report = {
        "out": str(tmp_path / "r"),
        "base_eval": str(tmp_path / "base"),
        "base_model": "/models/tiny",
        "seeds": [0],
        "reward": {"function": "compute_dense_score"},
        "likelihood": str(tmp_path / "lik.json"),
        "methods": methods,
    }
    paths = write_report(report)
    text = paths["table"].read_text()
    assert text.startswith("# Novel task")  # not a machinery check: no first-line disclaimer
    assert "| GRPO | 30.0 | 70.0 | 100.0 | -1.0 [-6.0, +4.0] | -1.0 | – |" in text
    assert "| SFT | 60.0 | 70.0 | 100.0 | -40.0 [-45.0, -35.0] | -40.0 | -3.500 |" in text
    assert "| GRPO (paper) | -0.6 | +1.7 |" in text and "| SFT (paper) | -57.2 | -62.8 |" in text
    assert "Base model `/models/tiny`; seeds 0; n per task (rows, paired across arms): jigsaw 4, easy_vqa 100." in text
    # the CPU GRPO reward has the digit share on top: max 4, not 3; the test reward stays max 3
    assert "(max 3); GRPO training `compute_dense_score` = R_hit + R_acc + R_fmt + digit share (max 4)" in text
    # constant "2 1 / 4 3": exact 2/4, hit (1 + 1 + .5 + .5)/4, reward .75 + .5 + 1 = 2.25 (computed, not typed in)
    assert "exact 50.0 %, hit 75.0 %, reward 2.25 of 3." in text
    # sft_rollouts − grpo: (20 − 38)/40 = −45 points; sft − sft_rollouts: (2 − 20)/40 = −45 points
    assert "| sft_rollouts − grpo | -45.0 [" in text
    assert "grpo > sft_rollouts (-45.0 [" in text and "sft_rollouts > sft (-45.0 [" in text and "same ordering" in text
    for kind in ("reward_per_step", "prior_delta", "new_vs_forgetting", "learning_curves"):
        assert paths[kind].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads(paths["results"].read_text())
    assert results["methods"]["grpo"]["curve"] == [[0, 0.75], [2, 2.0]]
    assert results["methods"]["grpo"]["exact_curve"] == [[0, 0.0], [2, 0.3]]
    assert results["methods"]["grpo"]["train_reward"] == [[1, 0.5], [2, 0.9]]
    assert results["reward"]["train"]["max"] == 4.0 and results["reward"]["test"]["max"] == 3.0
    assert "jigsaw" not in results["prior_tasks"]  # the new task is not a prior task
    assert markdown({**results, "methods": {}, "pairs": {}}).startswith("# Novel task")


def _pair(a: str, b: str, delta: float, lo: float, hi: float) -> dict:
    return {"a": a, "b": b, "prior": {"delta": delta, "ci_low": lo, "ci_high": hi, "n": [4]}}


def test_ordering_is_stated_only_where_intervals_separate():
    # the case: means −0.001 > −0.002 > −0.003 with intervals like [−1, 0] on 4 rows -> not "same ordering"
    pairs = {
        "sft_rollouts-grpo": _pair("grpo", "sft_rollouts", -0.001, -1.0, 0.5),
        "sft-sft_rollouts": _pair("sft_rollouts", "sft", -0.001, -1.0, 0.5),
    }
    line = ordering_line(pairs, {"s2_tiles": 4})
    assert "not resolved at n = s2_tiles 4" in line and "same ordering" not in line and "grpo ? sft_rollouts" in line
    pairs["sft-sft_rollouts"] = _pair("sft_rollouts", "sft", 0.3, 0.1, 0.5)  # SFT forgets LESS, separated
    assert "different ordering" in ordering_line(pairs, {"s2_tiles": 4})


def test_cpu_report_says_it_is_a_machinery_check_unless_an_interval_excludes_zero(tmp_path):
    methods = _study(tmp_path, {"grpo": 2, "sft_rollouts": 2, "sft": 2}, n_rows=4)
    for name in methods:  # Δ −1 [−6, +4] for every arm: nothing separated
        _forgetting(tmp_path / f"{name}.json", -0.01)
    report = {"out": str(tmp_path / "r"), "base_eval": str(tmp_path / "base"), "methods": methods, "seeds": [0]}
    text = write_report({**report, "machinery_check": True})["table"].read_text()
    assert text.splitlines()[0] == MACHINERY_LINE and "not resolved at n = easy_vqa 100" in text
    _forgetting(tmp_path / "sft.json", -0.40)  # SFT: −40 [−45, −35]: excludes zero
    first = write_report({**report, "machinery_check": True})["table"].read_text().splitlines()[0]
    assert "Only these differences" in first and "SFT vs base on easy_vqa: Δ accuracy -40.0 [-45.0, -35.0]" in first
    assert "(n = 100)" in first and "seeds 0" in first


def test_dry_run_skeleton_has_every_section(tmp_path):
    methods = {m: {"label": m, "eval": str(tmp_path / m), "forgetting": str(tmp_path / "none.json")} for m in PAPER}
    paths = write_report({"out": str(tmp_path / "r"), "methods": methods, "planned": True, "base_model": "M"})
    text = paths["table"].read_text()
    assert "Planned report (dry run)" in text and "Base model `M`" in text and "(max 3)" in text
    assert "| sft − grpo | – | – |" in text and "not resolved" in text


PAPER = ("grpo", "sft_rollouts", "sft")


def test_gpu_spec_composes_and_its_dry_run_writes_the_planned_report(tmp_path):
    from recipe.novel_task.study import REPO, load_spec

    spec = load_spec(REPO / "recipe/novel_task/config/study.yaml")
    lines: list[str] = []
    assert run_study(spec, str(tmp_path), dry_run=True, echo=lines.append) == 0
    steps = {line.split("]")[0][1:]: line for line in lines if line.startswith("[")}
    arms = ("grpo", "sft", "sft_rollouts", "sft_matched")  # the size-matched answer-only control is an arm
    for arm in arms:
        assert f"{tmp_path}/{arm}/eval" in steps[f"eval_{arm}"]
        for step in (50, 100, 150):  # intermediate checkpoints on the new and the prior tasks
            line = steps[f"eval_{arm}_step{step}"]
            assert f"global_step_{step}/" in line and "jigsaw=" in line and "refcoco=" in line
    order = list(steps)
    assert order.index("grpo") < order.index("rollout_guard") < order.index("sft")  # the guard before any SFT arm
    assert "--answer-only-out" in steps["rollout_data"] and "TOTAL_EPOCHS=1000" in steps["sft_matched"]
    text = (tmp_path / "report" / "report.md").read_text()
    assert "Planned report (dry run)" in text and "Base model `/models/Qwen2.5-VL-7B-Instruct`" in text
    assert "| sft_matched − grpo |" in text and "(max 3); GRPO training `compute_score`" in text
    assert (tmp_path / "report" / "learning_curves.png").exists()
    cpu = load_spec(REPO / "recipe/novel_task/config/study_cpu.yaml")
    assert cpu["report"]["machinery_check"] is True and cpu["report"]["reward"]["function"] == "compute_dense_score"
