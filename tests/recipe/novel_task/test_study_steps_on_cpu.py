"""The novel-task study runner with fake steps (tiny python commands): a step reruns when the model, the data or a
step count changes (`--set model=<another>` never reports the old model's results), typos in --set/--only refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from recipe.novel_task.study import main

# model --out D | train --model M --data F --steps N --out C | eval --model X --out J; every call logged beside it
FAKE = """
import pathlib, sys
calls = pathlib.Path(__file__).with_name("calls.log")
with calls.open("a") as f:
    f.write(sys.argv[1] + "\\n")
args = dict(zip(sys.argv[2::2], sys.argv[3::2]))
out = pathlib.Path(args["--out"])
if sys.argv[1] == "model":
    out.mkdir(parents=True, exist_ok=True)
    (out / "weights").write_text("model " + out.name)
elif sys.argv[1] == "train":
    weights = pathlib.Path(args["--model"], "weights").read_text()
    data = pathlib.Path(args["--data"]).read_text()
    (out / "final").mkdir(parents=True, exist_ok=True)
    (out / "final" / "weights").write_text(f"{weights} | {data} | {args['--steps']} steps")
else:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"weights": pathlib.Path(args["--model"], "weights").read_text()}))
""".replace("import pathlib", "import json, pathlib")


@pytest.fixture
def study(tmp_path):
    (tmp_path / "fake.py").write_text(FAKE)
    (tmp_path / "data.txt").write_text("rows v1")
    spec = {
        "output_root": str(tmp_path / "out"),
        "vars": {"model": "{output_root}/model_a", "data": str(tmp_path / "data.txt"), "steps": "2"},
        "steps": [
            {"name": "model", "run": f"{{python}} {tmp_path}/fake.py model --out {{model}}"},
            {
                "name": "train",
                "run": f"{{python}} {tmp_path}/fake.py train --model {{model}} --data {{data}} --steps {{steps}} "
                "--out {output_root}/train/ckpt",
                "clean": ["{output_root}/train/ckpt"],
            },
            {
                "name": "eval",
                "run": f"{{python}} {tmp_path}/fake.py eval --model {{output_root}}/train/ckpt/final "
                "--out {output_root}/eval/metrics.json",
            },
        ],
        "report": {"out": "{output_root}/report"},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return tmp_path


def run(study: Path, capsys, *extra: str) -> tuple[int, str, str]:
    code = main(["--spec", str(study / "spec.yaml"), "--only", "model,train,eval", *extra])
    out, err = capsys.readouterr()
    return code, out, err


def result(study: Path) -> str:
    return json.loads((study / "out/eval/metrics.json").read_text())["weights"]


def calls(study: Path) -> list[str]:
    return (study / "calls.log").read_text().split()


def test_a_changed_model_data_or_step_count_reruns_its_steps(study, capsys):
    code, out, _ = run(study, capsys)
    assert code == 0 and calls(study) == ["model", "train", "eval"]
    assert result(study) == "model model_a | rows v1 | 2 steps"
    code, out, _ = run(study, capsys)
    assert code == 0 and out.count("done before, skipped") == 3 and len(calls(study)) == 3
    # another model: every step that names it reruns, and the results are the new model's
    code, out, _ = run(study, capsys, "--set", "model={output_root}/model_b")
    assert code == 0 and "done before, skipped" not in out, out
    assert "[train] running: command changed: argv[4]:" in out
    assert result(study) == "model model_b | rows v1 | 2 steps"
    # the data rewritten under the same path: training reruns, and the evaluation after it (its input changed)
    (study / "data.txt").write_text("rows v2")
    code, out, _ = run(study, capsys, "--set", "model={output_root}/model_b")
    assert f"[train] running: input changed: {study / 'data.txt'}" in out
    assert f"[eval] running: input changed: {study / 'out/train/ckpt/final'}" in out
    assert "[model] done before, skipped" in out and calls(study)[-3:] == ["eval", "train", "eval"]
    assert result(study) == "model model_b | rows v2 | 2 steps"
    # another step count
    (study / "out/train/ckpt/stale_checkpoint").write_text("old")
    code, out, _ = run(study, capsys, "--set", "model={output_root}/model_b", "--set", "steps=3")
    assert "[train] running: command changed: argv[8]: '2' -> '3'" in out
    assert result(study) == "model model_b | rows v2 | 3 steps"
    assert not (study / "out/train/ckpt/stale_checkpoint").exists()  # `clean`: emptied before the rerun


def test_typos_in_set_and_only_are_refused(study, capsys):
    code, _, err = run(study, capsys, "--set", "modle=/elsewhere")
    assert code == 2 and err == "error: --set modle: unknown name; known: data, model, steps\n"
    code, _, err = run(study, capsys, "--set", "python=/usr/bin/python3")
    assert code == 2 and "set by the runner" in err
    code = main(["--spec", str(study / "spec.yaml"), "--only", "trian"])
    assert code == 2 and "unknown steps ['trian']; known: model, train, eval, report" in capsys.readouterr().err
    assert not (study / "calls.log").exists()
