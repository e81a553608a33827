"""Experiment matrix: argv per cell (dry-run), no shell injection, spec errors, resumability with fake commands."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

from recipe.common.templates import build_argv
from recipe.domain_grpo.experiments import matrix
from recipe.domain_grpo.experiments.__main__ import main

PY = sys.executable
# the fakes log their calls beside themselves (a log named in the command would be an input of every step)
FAKE_TRAIN = """
import sys, pathlib
log, ckpt = pathlib.Path(__file__).with_name("calls.log"), pathlib.Path(sys.argv[1])
open(log, "a").write("train " + " ".join(sys.argv[2:]) + "\\n")
ckpt.mkdir(parents=True, exist_ok=True)
"""
FAKE_EVAL = """
import json, os, sys, pathlib
log, out, acc = pathlib.Path(__file__).with_name("calls.log"), pathlib.Path(sys.argv[1]), float(sys.argv[2])
open(log, "a").write("eval " + str(out) + "\\n")
if log.with_name("fail").exists():
    sys.exit(3)
out.mkdir(parents=True, exist_ok=True)
json.dump({"accuracy": acc, "n": 10}, open(out / "metrics.json", "w"))
"""


def small_spec(tmp: Path) -> dict:
    (tmp / "train.py").write_text(FAKE_TRAIN)
    (tmp / "eval.py").write_text(FAKE_EVAL)
    return {
        "output_root": str(tmp / "runs"),
        "vars": {"model": "/m/base", "data_root": "/d", "acc": "0.5"},
        "commands": {
            "rl": "{python} " + str(tmp / "train.py") + " {ckpt_dir} method={method} f={train} s={seed} {extra}",
            "eval": "{python} " + str(tmp / "eval.py") + " {eval_dir} {acc} --model {eval_model} --t {transforms}",
        },
        "shots": [1, 4],
        "seeds": [0, 1],
        "datasets": {"ucm": {"domain": "remote_sensing", "transforms": "rot90,rot180"}},
        "methods": {
            "zero_shot": None,
            "grpo": {"train": "rl", "vars": {"eval_model": "{ckpt_dir}", "extra": ["a=1", "b c"]}},
        },
    }


def test_cells_and_argv(tmp_path) -> None:
    spec = small_spec(tmp_path)
    cells = matrix.expand_cells(spec)
    # zero_shot: shot-independent -> 1 shot (0) x 2 seeds; grpo: 2 shots x 2 seeds -> 2 + 4 = 6 cells
    assert [c.name for c in cells] == [
        "zero_shot ucm 0shot seed0",
        "zero_shot ucm 0shot seed1",
        "grpo ucm 1shot seed0",
        "grpo ucm 1shot seed1",
        "grpo ucm 4shot seed0",
        "grpo ucm 4shot seed1",
    ]
    zs, g = cells[0], cells[4]
    runs = tmp_path / "runs"
    assert zs.train_argv is None
    assert zs.eval_argv == [
        PY, str(tmp_path / "eval.py"), f"{runs}/zero_shot/ucm/0shot/seed0/eval", "0.5",
        "--model", "/m/base", "--t", "rot90,rot180",
    ]  # fmt: skip
    ckpt = f"{runs}/grpo/ucm/4shot/seed0/checkpoints"
    # the list variable {extra} expands to two arguments, "b c" stays one
    assert g.train_argv == [
        PY, str(tmp_path / "train.py"), ckpt, "method=grpo", "f=/d/ucm/train_4shot.parquet", "s=0", "a=1", "b c",
    ]  # fmt: skip
    assert g.eval_argv[5] == ckpt  # --model {eval_model} = {ckpt_dir}
    filtered = matrix.expand_cells(spec, methods=["grpo"], shots=[4], seeds=[1])
    assert [c.name for c in filtered] == ["grpo ucm 4shot seed1"]


def test_values_never_reach_a_shell(tmp_path) -> None:
    spec = small_spec(tmp_path)
    spec["vars"]["data_root"] = "/d; rm -rf ~ $(x)"
    argv = matrix.expand_cells(spec, methods=["grpo"], shots=[1], seeds=[0])[0].train_argv
    assert "f=/d; rm -rf ~ $(x)/ucm/train_1shot.parquet" in argv  # one argument, verbatim
    assert build_argv("echo '{a} {b}' {{lit}}", {"a": "x", "b": "y z"}) == ["echo", "x y z", "{lit}"]
    assert build_argv("run --k={shot:02d}", {"shot": 4}) == ["run", "--k=04"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s["methods"].update(magic={}), "unknown method"),
        (lambda s: s["methods"].update(zero_shot={"train": "rl"}), "evaluation only"),
        (lambda s: s["methods"]["grpo"].update(train="nope"), "not under 'commands'"),
        (lambda s: s["methods"]["grpo"].update(datasets=["aid"]), "not under 'datasets'"),
        (lambda s: s["datasets"].update({"a/b": {"domain": "x"}}), "dataset name"),
        (lambda s: s.update(shots=[]), "shots"),
        (lambda s: s.update(typo=1), "top-level"),
    ],
)
def test_spec_validation(tmp_path, mutate, message) -> None:
    spec = small_spec(tmp_path)
    mutate(spec)
    with pytest.raises(matrix.SpecError, match=message):
        matrix.validate_spec(spec)


@pytest.mark.parametrize(
    ("template", "variables", "message"),
    [
        ("x {missing}", {}, "unknown template variable"),
        ("x {a}", {"a": "{b}", "b": "{a}"}, "cycle"),
        ("x --e={extra}", {"extra": ["1"]}, "whole command token"),
        ("x {a[0]}", {"a": "q"}, "plain names"),
    ],
)
def test_template_errors(template, variables, message) -> None:
    with pytest.raises(matrix.SpecError, match=message):
        build_argv(template, variables)


def test_cell_keys_cannot_be_overridden(tmp_path) -> None:
    spec = small_spec(tmp_path)
    spec["vars"]["seed"] = 3
    with pytest.raises(matrix.SpecError, match="cannot be overridden"):
        matrix.expand_cells(spec)


def write_spec(tmp_path: Path, spec: dict) -> Path:
    path = tmp_path / "spec.yaml"
    import yaml

    path.write_text(yaml.safe_dump(spec))
    return path


def test_dry_run_cli_prints_argv_and_writes_nothing(tmp_path, capsys) -> None:
    path = write_spec(tmp_path, small_spec(tmp_path))
    assert main(["run", "--spec", str(path), "--dry-run", "--methods", "grpo", "--shots", "1", "--seeds", "0"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "[grpo ucm 1shot seed0] train+eval: not run before"
    assert out[1].startswith(f"  train: {PY} {tmp_path}/train.py") and out[1].endswith("s=0 a=1 'b c'")
    assert out[2].startswith(f"  eval: {PY} {tmp_path}/eval.py")
    assert out[-1] == 'summary: {"planned": 1}'
    assert not (tmp_path / "runs").exists() and not (tmp_path / "calls.log").exists()


def test_resumable_run(tmp_path, capsys) -> None:
    spec = small_spec(tmp_path)
    spec["methods"]["grpo"]["vars"]["extra"] = []
    path, log = write_spec(tmp_path, spec), tmp_path / "calls.log"
    args = ["run", "--spec", str(path), "--methods", "grpo", "--shots", "1", "--seeds", "0,1"]
    assert main(args) == 0
    calls = log.read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["train", "eval", "train", "eval"]
    cell_dir = tmp_path / "runs/grpo/ucm/1shot/seed0"
    assert json.loads((cell_dir / "cell.json").read_text())["shot"] == 1
    assert (cell_dir / "train_done.json").exists() and (cell_dir / "eval/metrics.json").exists()
    # second run: everything done -> nothing launched
    assert main(args) == 0
    assert log.read_text().splitlines() == calls
    assert "[grpo ucm 1shot seed0] done before, skipped" in capsys.readouterr().out
    # evaluation lost and failing: training is NOT redone, the failure is reported (exit 1)
    (cell_dir / "eval/metrics.json").unlink()
    (tmp_path / "fail").write_text("")
    assert main(args) == 1
    assert log.read_text().splitlines()[len(calls) :] == [f"eval {cell_dir}/eval"]
    # fixed: only the evaluation of that cell reruns
    (tmp_path / "fail").unlink()
    assert main(args) == 0
    assert log.read_text().splitlines()[len(calls) + 1 :] == [f"eval {cell_dir}/eval"]


def _calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls.log"
    return [c.split()[0] for c in log.read_text().splitlines()] if log.exists() else []


def test_a_changed_model_data_or_step_count_reruns_the_cell(tmp_path, capsys) -> None:
    spec = small_spec(tmp_path)
    data = tmp_path / "data" / "ucm"
    data.mkdir(parents=True)
    (data / "train_1shot.parquet").write_text("rows v1")
    spec["vars"]["data_root"] = str(tmp_path / "data")
    spec["commands"]["rl"] += " m={model}"
    spec["methods"]["grpo"]["vars"]["extra"] = ["steps=2"]
    path = write_spec(tmp_path, spec)
    args = ["run", "--spec", str(path), "--methods", "grpo", "--shots", "1", "--seeds", "0"]
    assert main(args) == 0 and _calls(tmp_path) == ["train", "eval"]
    assert main(args) == 0 and _calls(tmp_path) == ["train", "eval"]  # all the same: skipped
    capsys.readouterr()
    # another base model: training and evaluation run again (the old code kept the old model's metrics.json)
    spec["vars"]["model"] = "/m/other"
    write_spec(tmp_path, spec)
    assert main(args) == 0 and _calls(tmp_path)[2:] == ["train", "eval"]
    assert "train+eval: command changed: argv[" in capsys.readouterr().out
    # the same data path, new content
    (data / "train_1shot.parquet").write_text("rows v2")
    assert main(args) == 0 and _calls(tmp_path)[4:] == ["train", "eval"]
    assert f"input changed: {data / 'train_1shot.parquet'}" in capsys.readouterr().out
    # another step count
    spec["methods"]["grpo"]["vars"]["extra"] = ["steps=3"]
    write_spec(tmp_path, spec)
    assert main(args) == 0 and _calls(tmp_path)[6:] == ["train", "eval"]
    assert "'steps=2' -> 'steps=3'" in capsys.readouterr().out
    # the checkpoint evaluated changed (retrained by hand): only the evaluation reruns
    (tmp_path / "runs/grpo/ucm/1shot/seed0/checkpoints/weights").write_text("new")
    assert main(args) == 0 and _calls(tmp_path)[8:] == ["eval"]
    # --set overrides a variable in every cell
    assert main([*args, "--set", "model=/m/third"]) == 0 and _calls(tmp_path)[9:] == ["train", "eval"]


def test_set_refuses_unknown_names(tmp_path, capsys) -> None:
    path = write_spec(tmp_path, small_spec(tmp_path))
    assert main(["run", "--spec", str(path), "--dry-run", "--set", "modle=/m/other"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("spec error: --set modle: unknown name; known: acc, ckpt_dir, data_root, eval_dir, ")
    assert err.count("\n") == 1 and "model" in err
    assert main(["run", "--spec", str(path), "--dry-run", "--set", "seed=3"]) == 2
    assert "set by the runner" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_missing_program_fails_cleanly(tmp_path) -> None:
    spec = copy.deepcopy(small_spec(tmp_path))
    spec["commands"]["eval"] = "/nonexistent/program {eval_dir}"
    cells = matrix.expand_cells(spec, methods=["zero_shot"], seeds=[0])
    assert matrix.run_matrix(cells, echo=lambda s: None) == {"failed": 1}
    assert "could not start" in (cells[0].run_dir / "eval.log").read_text()


def test_shipped_paper_matrix_spec_expands() -> None:
    spec = matrix.load_spec(Path(matrix.__file__).with_name("paper_matrix.yaml"))
    cells = matrix.expand_cells(spec)
    # 2 eval-only x 11 datasets + 3 main methods x 11 x 4 shots + 8 UCM ablations x 4 shots = 22 + 132 + 32 = 186
    assert len(cells) == 186
    assert {c.method for c in cells} == set(matrix.METHODS)
    dc_dr = next(c for c in cells if c.method == "dc_dr" and c.dataset == "ucm" and c.shot == 8)
    assert "method=dc_dr" in dc_dr.train_argv and "data.train_files=data/ucm/train_8shot.parquet" in dc_dr.train_argv
