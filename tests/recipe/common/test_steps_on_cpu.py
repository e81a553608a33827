"""The shared step runner with fake steps (tiny python commands): skip only when command and inputs match, one-line
reasons, clean before a rerun, resume after an interruption, failures, templates, --set/--only."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from recipe.common.steps import Runner, Step, StepFailed, fingerprint, parse_only, parse_sets
from recipe.common.templates import SpecError, build_argv

PY = sys.executable
# copies argv[1] (a file) to argv[2], appending argv[3:]; counts its runs in <argv[2]>.runs
COPY = """
import sys, pathlib
src, dst = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
dst.parent.mkdir(parents=True, exist_ok=True)
dst.write_text(src.read_text() + " ".join(sys.argv[3:]))
runs = dst.with_name(dst.name + ".runs")
runs.write_text(str(int(runs.read_text()) + 1 if runs.exists() else 1))
"""


@pytest.fixture
def work(tmp_path):
    (tmp_path / "copy.py").write_text(COPY)
    (tmp_path / "in.txt").write_text("A")
    return tmp_path


def copy_step(work: Path, *extra: str, **kw) -> Step:
    out = work / "out" / "result.txt"
    argv = [PY, str(work / "copy.py"), str(work / "in.txt"), str(out), *extra]
    return Step("copy", argv, marker=work / "marks" / "copy.json", log=work / "logs" / "copy.log", outputs=[out], **kw)


def runs(work: Path) -> int:
    return int((work / "out" / "result.txt.runs").read_text())


def test_skips_only_when_command_and_inputs_match(work):
    lines: list[str] = []
    runner = Runner(echo=lines.append, state_dirs=[work / "marks", work / "logs"])
    assert runner.run(copy_step(work)) == "done" and runs(work) == 1
    assert lines[0].startswith("[copy] running: not run before")
    assert runner.run(copy_step(work)) == "skipped" and runs(work) == 1
    assert lines[-1] == "[copy] done before, skipped"
    # the command changed (e.g. a step count): reruns, saying where
    assert runner.run(copy_step(work, "--steps=3")) == "done" and runs(work) == 2
    assert "running: command changed: argv: 4 -> 5 items" in lines[-2]
    assert runner.run(copy_step(work, "--steps=4")) == "done" and runs(work) == 3
    assert "command changed: argv[4]: '--steps=3' -> '--steps=4'" in lines[-2]
    # the data changed under the same path: reruns (a marker keyed on the argv alone would skip it)
    (work / "in.txt").write_text("B")
    assert runner.run(copy_step(work, "--steps=4")) == "done" and runs(work) == 4
    assert f"running: input changed: {work / 'in.txt'}" in lines[-2]
    assert (work / "out" / "result.txt").read_text() == "B--steps=4"
    # the environment the step adds is part of its command
    assert runner.run(copy_step(work, "--steps=4", env={"SEED": "1"})) == "done" and runs(work) == 5
    assert "command changed: env.SEED added" in lines[-2]
    # an output removed by hand: reruns
    (work / "out" / "result.txt").unlink()
    assert runner.run(copy_step(work, "--steps=4", env={"SEED": "1"})) == "done" and runs(work) == 6
    assert "output missing" in lines[-2]


def test_inputs_are_the_paths_the_step_names(work):
    model = work / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"x" * 10)
    step = copy_step(work, f"model.path={model}", "--tasks", f"a={work / 'in.txt'},b={work / 'nope'}")
    step.env = {"LOG": str(work / "logs" / "other.log"), "MODEL": str(model)}
    runner = Runner(state_dirs=[work / "marks", work / "logs"], echo=lambda s: None)
    # the program's script, the data and the model; never the outputs, the runner's folders or a path that is not there
    named = [str(work / "copy.py"), str(work / "in.txt"), str(model)]
    assert runner.named_inputs(step) == sorted(named)
    runner.run(step)
    recorded = json.loads((work / "marks" / "copy.json").read_text())["inputs"]
    assert sorted(recorded) == sorted(named)
    assert runner.check(step) is None
    # new weights at the same path (same size, later mtime): the model folder changed
    (model / "weights.bin").write_bytes(b"y" * 10)
    os.utime(model / "weights.bin", ns=(1, 1))
    assert runner.check(step) == f"input changed: {model}"


def test_fingerprints():
    assert fingerprint("/nonexistent/x") == "missing"


def test_fingerprint_of_a_file_by_content(tmp_path):
    f = tmp_path / "f.txt"
    f.write_text("abc")
    first = fingerprint(f)
    os.utime(f, ns=(5, 5))
    assert fingerprint(f) == first  # small file: the content, not the time
    f.write_text("abd")
    assert fingerprint(f) != first


def test_clean_before_a_rerun_but_resume_after_an_interruption(work):
    ckpt = work / "ckpt"
    script = work / "train.py"
    # "trains": fails at the first call if <ckpt>/fail exists, leaving a partial checkpoint; resumes from it otherwise
    script.write_text(
        "import sys, pathlib\nc = pathlib.Path(sys.argv[1])\n"
        "(c / ('step' + sys.argv[2])).write_text('w')\n"
        "sys.exit(1 if (c.parent / 'fail').exists() else 0)\n"
    )

    def train(steps: str) -> Step:
        argv = [PY, str(script), str(ckpt), steps]
        return Step("train", argv, work / "m.json", work / "t.log", clean=[ckpt], resumable=True)

    runner = Runner(echo=lambda s: None)
    (work / "fail").write_text("")
    with pytest.raises(StepFailed, match=r"step train failed with exit code 1; see .*t\.log"):
        runner.run(train("2"))
    (work / "fail").unlink()
    (ckpt / "old").write_text("partial")
    assert runner.check(train("2")) == "interrupted before it finished"
    runner.run(train("2"))
    assert (ckpt / "old").exists()  # same command after an interruption: the checkpoint is kept (verl resumes)
    runner.run(train("3"))
    assert sorted(p.name for p in ckpt.iterdir()) == ["step3"]  # another command: emptied first


def test_failures_are_one_line(work):
    runner = Runner(echo=lambda s: None)
    missing = Step("x", ["/nonexistent/program"], work / "m.json", work / "x.log")
    with pytest.raises(StepFailed, match="exit code 127"):
        runner.run(missing)
    assert "could not start" in (work / "x.log").read_text()
    silent = Step("y", [PY, "-c", "pass"], work / "y.json", work / "y.log", outputs=[work / "never.txt"])
    with pytest.raises(StepFailed, match="exited 0 but did not write"):
        runner.run(silent)
    with pytest.raises(StepFailed, match="refusing to empty"):
        runner.run(Step("z", [PY, "-c", "pass"], work / "z.json", work / "z.log", clean=[work]))
    assert not (work / "y.json").exists() or json.loads((work / "y.json").read_text())["state"] == "running"


def test_old_markers_and_dry_run(work):
    lines: list[str] = []
    step = copy_step(work)
    step.marker.parent.mkdir(parents=True)
    step.marker.write_text(json.dumps({"argv": list(step.argv), "seconds": 1.0}))  # the previous runners' marker
    assert "older runner" in Runner().check(step)
    assert Runner(echo=lines.append, dry_run=True).run(step) == "planned"
    assert lines == [f"[copy] would run (marker unreadable or written by an older runner (no inputs recorded)): "
                     f"{PY} {work}/copy.py {work}/in.txt {work}/out/result.txt"]  # fmt: skip
    assert not (work / "out").exists()


def test_templates():
    assert build_argv("echo '{a} {b}' {{lit}} {extra}", {"a": "x", "b": "y z", "extra": ["1", "2 3"]}) == [
        "echo",
        "x y z",
        "{lit}",
        "1",
        "2 3",
    ]
    with pytest.raises(SpecError, match="cycle"):
        build_argv("x {a}", {"a": "{b}", "b": "{a}"})


def test_set_and_only():
    sets = parse_sets(["model=/m", "extra=[a=1, b]"], known=["model", "extra"])
    assert sets == {"model": "/m", "extra": ["a=1", "b"]}
    with pytest.raises(SpecError, match=r"--set modle: unknown name; known: extra, model"):
        parse_sets(["modle=/m"], known=["model", "extra"])
    with pytest.raises(SpecError, match="set by the runner"):
        parse_sets(["python=/x"], known=["model"], reserved=["python"])
    with pytest.raises(SpecError, match="expected name=value"):
        parse_sets(["model"], known=["model"])
    assert parse_only(None, ["a"]) is None and parse_only("a, b", ["a", "b", "c"]) == {"a", "b"}
    with pytest.raises(SpecError, match=r"unknown steps \['x'\]; known: a, b"):
        parse_only("a,x", ["a", "b"])
