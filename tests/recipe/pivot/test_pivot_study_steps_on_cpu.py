"""The PIVOT study runner with fake stages (tiny python commands): a stage reruns when the base model, the data or a
step count changes, and the stages after it follow; unknown --set / --only names are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from recipe.pivot.study import report
from recipe.pivot.study.__main__ import main
from recipe.pivot.study.runner import StudyError, load_spec, run

# one fake for every stage: reads the weights/text of its inputs, writes what the runner checks for; logs each call
FAKE = """
import json, pathlib, sys
kind, args = sys.argv[1], dict(zip(sys.argv[2::2], sys.argv[3::2]))
with pathlib.Path(__file__).with_name("calls.log").open("a") as f:
    f.write(kind + "\\n")
def read(p):
    p = pathlib.Path(p)
    return (p / "weights").read_text() if p.is_dir() else p.read_text()
out = pathlib.Path(args["--out"])
out.mkdir(parents=True, exist_ok=True) if kind not in ("sft_rows",) else out.parent.mkdir(parents=True, exist_ok=True)
if kind == "pairs":
    (out / "pairs.parquet").write_text("pairs of " + read(args["--from-rows"]))
elif kind == "sft_rows":
    out.write_text("sft rows of " + read(args["--pairs"]))
elif kind == "train":
    hf = out / f"global_step_{args['--steps']}" / "huggingface"
    hf.mkdir(parents=True)
    (hf / "config.json").write_text("{}")
    (hf / "weights").write_text(f"({read(args['--model'])} + {read(args['--train'])}, {args['--steps']} steps)")
    (out / "latest_checkpointed_iteration.txt").write_text(args["--steps"])
elif kind == "transplant":
    (out / "weights").write_text(f"{read(args['--base'])} with the encoder of {read(args['--encoder'])}")
    (out / "transplant.json").write_text("{}")
elif kind == "probes":
    (out / "probes.json").write_text(json.dumps({"sft": read(args["--sft"]), "dpo": read(args["--dpo"])}))
else:
    (out / "metrics.json").write_text(json.dumps({"weights": read(args["--model"])}))
"""


@pytest.fixture
def study(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "write_report", lambda spec, out: None)  # the report needs real runs
    (tmp_path / "fake.py").write_text(FAKE)
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "weights").write_text("base A")
    (tmp_path / "train.parquet").write_text("rows v1")
    fake = f"{{python}} {tmp_path / 'fake.py'}"
    train = fake + " train --model {model} --train {sft_file} --steps {steps} --out {ckpt}"
    spec = {
        "vars": {"base": "???", "train": "???", "test": "???", "out": "???", "pairs": "", "seed": 0, "steps": "2"},
        "env": {"VERL_FILE_LOGGER_PATH": "{ckpt}/metrics.jsonl"},
        "encoders": ["base", "sft"],
        "commands": {
            "pairs": fake + " pairs --from-rows {train} --out {data_dir}",
            "sft_rows": fake + " sft_rows --pairs {pairs_file} --out {sft_file}",
            "sft": train,
            "dpo": fake + " train --model {model} --train {pairs_file} --steps {steps} --out {ckpt}",
            "probes": fake + " probes --sft {sft_model} --dpo {dpo_model} --out {probes_dir}",
            "transplant": fake + " transplant --base {base} --encoder {encoder_model} --out {transplant_dir}",
            "stage1": train,
            "stage2": train,
            "eval": fake + " eval --model {model} --test {test} --out {eval_dir}",
        },
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    return tmp_path


def sets(study: Path, **extra: str) -> dict[str, str]:
    base = {"base": str(study / "base"), "train": str(study / "train.parquet"), "test": str(study / "train.parquet")}
    return {**base, "out": str(study / "out"), **extra}


def evaluated(study: Path, name: str) -> str:
    return json.loads((study / "out" / "eval" / name / "metrics.json").read_text())["weights"]


def test_a_changed_model_data_or_step_count_reruns_the_stages_after_it(study):
    lines: list[str] = []
    status = run(load_spec(study / "spec.yaml", sets(study)), echo=lines.append)
    assert set(status.values()) == {"done"} and len(status) == 16
    assert evaluated(study, "sft") == "(base A + sft rows of pairs of rows v1, 2 steps)"
    status = run(load_spec(study / "spec.yaml", sets(study)), echo=lines.append)
    assert set(status.values()) == {"skipped"}
    # another base model in another folder: everything trained or read from it reruns
    (study / "base_b").mkdir()
    (study / "base_b" / "weights").write_text("base B")
    lines.clear()
    status = run(load_spec(study / "spec.yaml", sets(study, base=str(study / "base_b"))), echo=lines.append)
    assert status["dpo"] == status["sft"] == status["eval_base"] == status["eval_pivot_sft"] == "done"
    assert status["pairs"] == status["sft_rows"] == "skipped"
    assert evaluated(study, "dpo") == "(base B + pairs of rows v1, 2 steps)"
    assert any(line.startswith("[dpo] running: command changed: argv[4]:") for line in lines), lines
    # the data rewritten in place: the pairs and everything after them rerun
    (study / "train.parquet").write_text("rows v2")
    lines.clear()
    status = run(load_spec(study / "spec.yaml", sets(study, base=str(study / "base_b"))), echo=lines.append)
    assert status["pairs"] == status["sft_rows"] == status["dpo"] == status["stage2_sft"] == "done"
    assert any(line.startswith(f"[pairs] running: input changed: {study / 'train.parquet'}  (log") for line in lines)
    assert evaluated(study, "pivot_sft").endswith("rows v2, 2 steps)")
    # another step count: the training stages rerun from an emptied checkpoint folder
    status = run(load_spec(study / "spec.yaml", sets(study, base=str(study / "base_b"), steps="3")), echo=print)
    assert status["sft"] == status["dpo"] == status["stage1_base"] == status["eval_sft"] == "done"
    assert status["pairs"] == "skipped"
    assert sorted(p.name for p in (study / "out" / "sft").glob("global_step_*")) == ["global_step_3"]
    assert evaluated(study, "sft").endswith(", 3 steps)")


def test_unknown_set_and_only_names_are_refused(study, capsys):
    with pytest.raises(StudyError, match="--set bsae: unknown name; known: base, out, pairs, seed, steps, test, train"):
        load_spec(study / "spec.yaml", {**sets(study), "bsae": "/models/b"})
    argv = ["--spec", str(study / "spec.yaml"), *(f"--set={k}={v}" for k, v in sets(study).items())]
    assert main([*argv, "--only", "sft,dop"]) == 2
    assert "--only 'sft,dop': unknown steps ['dop']; known: pairs, sft_rows, dpo, sft" in capsys.readouterr().err
    assert main([*argv, "--only", "pairs,sft_rows"]) == 0
    assert (study / "calls.log").read_text().split() == ["pairs", "sft_rows"]
    assert "study: 2 stages run, 0 skipped" in capsys.readouterr().out
