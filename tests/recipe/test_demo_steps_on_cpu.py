"""The demo's steps (`Pipeline.step`, shared with bench/bench_effect.py) with fake commands: a step reruns when the data
or the model it names changes in place, or its command or environment changes; a failure is one line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from recipe.domain_grpo.demo_pipeline import Pipeline, Settings, StepError

# "trains": copies the weights of --model and the rows of --data into --out, logs each call beside itself
FAKE = """
import os, pathlib, sys
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
with pathlib.Path(__file__).with_name("calls.log").open("a") as f:
    f.write("call\\n")
out = pathlib.Path(args["--out"])
out.parent.mkdir(parents=True, exist_ok=True)
weights = pathlib.Path(args["--model"], "model.safetensors").read_text()
rows = pathlib.Path(args["--data"]).read_text()
out.write_text(f"{weights} | {rows} | {args['--steps']} steps | lr {os.environ.get('LR')}")
"""


@pytest.fixture
def pipe(tmp_path):
    (tmp_path / "fake.py").write_text(FAKE)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.safetensors").write_text("weights A")
    (tmp_path / "train.parquet").write_text("rows v1")
    lines: list[str] = []
    pipeline = Pipeline(tmp_path / "out", Settings(), echo=lines.append)
    pipeline.lines = lines
    return pipeline


def train(pipe: Pipeline, steps: int = 2, lr: str = "1e-4") -> str:
    work = pipe.out.parent
    out = pipe.out / "run" / "result.txt"
    argv = [sys.executable, work / "fake.py", "--model", work / "model", "--data", work / "train.parquet"]
    argv += ["--steps", str(steps), "--out", out]
    pipe.step("train", argv, [out], clean=[out.parent], env={"LR": lr})
    return out.read_text()


def calls(pipe: Pipeline) -> int:
    return len((pipe.out.parent / "calls.log").read_text().split())


def test_a_step_reruns_when_its_data_model_command_or_env_changes(pipe):
    assert train(pipe) == "weights A | rows v1 | 2 steps | lr 1e-4" and calls(pipe) == 1
    assert train(pipe) == "weights A | rows v1 | 2 steps | lr 1e-4" and calls(pipe) == 1
    assert pipe.lines[-1] == "[train] done before, skipped"
    # the data re-converted under the same path (the old marker, keyed on the argv, kept the old run)
    (pipe.out.parent / "train.parquet").write_text("rows v2")
    assert train(pipe) == "weights A | rows v2 | 2 steps | lr 1e-4" and calls(pipe) == 2
    assert pipe.lines[-2].startswith(f"[train] running: input changed: {pipe.out.parent / 'train.parquet'}")
    # another model in the same folder (a rebuilt warm start)
    (pipe.out.parent / "model" / "model.safetensors").write_text("weights B")
    assert train(pipe) == "weights B | rows v2 | 2 steps | lr 1e-4" and calls(pipe) == 3
    # a step count, and a setting passed through the environment
    assert train(pipe, steps=3) == "weights B | rows v2 | 3 steps | lr 1e-4" and calls(pipe) == 4
    assert "[train] running: command changed: argv[7]: '2' -> '3'" in pipe.lines[-2]
    assert train(pipe, steps=3, lr="2e-4") == "weights B | rows v2 | 3 steps | lr 2e-4" and calls(pipe) == 5
    assert "[train] running: command changed: env.LR: '1e-4' -> '2e-4'" in pipe.lines[-2]
    assert set(pipe.seconds) == {"train"}


def test_a_failed_step_is_one_line_naming_its_log(pipe):
    with pytest.raises(StepError, match=r"^step broken failed with exit code 3; see .*/logs/broken\.log$"):
        pipe.step("broken", [sys.executable, "-c", "import sys; sys.exit(3)"], [])
    with pytest.raises(StepError, match=r"step sft saved no HF weights under"):
        _ = pipe.warm_start  # nothing trained yet
    assert pipe.trained_model("grpo", 0) is None
    hf = pipe.run_dir("grpo", 0) / "ckpt" / "global_step_16" / "actor" / "huggingface"
    hf.mkdir(parents=True)
    (hf / "config.json").write_text("{}")
    (hf.parents[2] / "latest_checkpointed_iteration.txt").write_text("16")
    assert pipe.trained_model("grpo", 0) == hf and Path(hf).is_dir()
