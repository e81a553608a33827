"""Forgetting harness: paired bootstrap (hand cases, loop reference), the per-task comparison and its reading,
the multi-task evaluation and the target likelihood with the tiny model through the HF backend."""

from __future__ import annotations

import json

import numpy as np
import pytest
from eval_rows import UCM_VOCAB, make_row, write_rows

from verl_ext.evaluation import forgetting as F
from verl_ext.evaluation.likelihood import summarize, target_logprobs
from verl_ext.evaluation.tasks import evaluate_tasks, parse_tasks, read_predictions


def test_bootstrap_hand_cases():
    # identical runs: Δ = 0 and every resample gives 0
    assert F.paired_bootstrap([1, 0, 1], [1, 0, 1]) == {"delta": 0.0, "ci_low": 0.0, "ci_high": 0.0, "n": 3}
    # every row goes 1 -> 0: every resampled mean difference is −1
    out = F.paired_bootstrap([1, 1, 1, 1], [0, 0, 0, 0])
    assert (out["delta"], out["ci_low"], out["ci_high"]) == (-1.0, -1.0, -1.0)
    assert F.paired_bootstrap([], [])["n"] == 0
    with pytest.raises(ValueError):
        F.paired_bootstrap([1, 0], [1])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bootstrap_matches_a_loop_reference(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 2, 40).astype(float), rng.integers(0, 2, 40).astype(float)
    out = F.paired_bootstrap(a, b, n_boot=300, seed=seed)
    idx = np.random.default_rng(seed).integers(0, 40, size=(300, 40))
    loop = [sum(b[i] - a[i] for i in row) / 40 for row in idx]
    assert out["delta"] == pytest.approx(b.mean() - a.mean())
    assert out["ci_low"] == pytest.approx(np.quantile(loop, 0.025)) and out["ci_high"] == pytest.approx(
        np.quantile(loop, 0.975)
    )
    assert out["ci_low"] <= out["delta"] <= out["ci_high"]


def _records(preds, labels, dists=None):
    out = []
    for i, (p, y) in enumerate(zip(preds, labels)):
        rec = {"index": i, "view": "identity", "label": y, "prediction": p}
        if dists is not None:
            rec["answer_distribution"] = dists[i]
        out.append(rec)
    return out


def test_format_change_is_told_apart_from_forgetting():
    labels = ["a"] * 60
    right = {"a": 0.9, "b": 0.1}
    wrong = {"a": 0.1, "b": 0.9}
    base = _records(["a"] * 60, labels, [right] * 60)
    # format drift: no valid answer any more, but the teacher-forced distribution still picks the label
    drift = F.compare_task(base, _records([None] * 60, labels, [right] * 60))
    assert drift["accuracy"]["delta"] == -1.0 and drift["valid_rate"]["delta"] == -1.0
    assert drift["answer_dist_accuracy"]["delta"] == 0.0 and drift["answer_js"] == 0.0
    assert drift["reading"] == "answer format changed (knowledge kept)"
    # forgetting: valid answers, wrong, and the distribution moved to the wrong class
    forgot = F.compare_task(base, _records(["b"] * 60, labels, [wrong] * 60))
    assert forgot["reading"] == "forgot the knowledge" and forgot["valid_rate"]["delta"] == 0.0
    # JS between (0.9, 0.1) and (0.1, 0.9) in bits: 1 − H2(0.5·0.9 + 0.5·0.1 = 0.5) + H2(0.9) = 0.531
    assert forgot["answer_js"] == pytest.approx(0.5310044, abs=1e-6)
    assert F.compare_task(base, base)["reading"] == "no significant change"
    with pytest.raises(ValueError, match="different rows"):
        F.compare_task(base, base[:-1])


def test_jigsaw_tasks_compare_exact_and_hit():
    base = [{"index": i, "acc": 0.0, "hit": 0.25, "answer_valid": 1.0} for i in range(10)]
    trained = [{"index": i, "acc": float(i < 5), "hit": 1.0 if i < 5 else 0.5, "answer_valid": 1.0} for i in range(10)]
    out = F.compare_task(base, trained)
    # exact 0 -> 0.5; hit 0.25 -> (5·1 + 5·0.5)/10 = 0.75
    assert out["exact"]["delta"] == 0.5 and out["hit"]["delta"] == 0.5 and out["kind"] == "jigsaw"


def test_parse_tasks_errors():
    assert parse_tasks("a=x.parquet, b=y.parquet") == {"a": "x.parquet", "b": "y.parquet"}
    for bad in ("a", "a=x,a=y", "=x", ""):
        with pytest.raises(ValueError):
            parse_tasks(bad)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from verl_ext.cpu.tiny_qwen25vl import build_tiny_model_dir

    return build_tiny_model_dir(tmp_path_factory.mktemp("m") / "tiny")


def test_evaluate_then_compare_on_prior_and_jigsaw_tasks(tiny_model, tmp_path, capsys):
    from data_prep.jigsaw import jigsaw_row
    from verl_ext.evaluation.backends import HFBackend

    prior = write_rows(tmp_path / "prior.parquet", [make_row(i, UCM_VOCAB[i % 3], UCM_VOCAB, None) for i in range(4)])
    png = tmp_path / "p.png"
    from PIL import Image

    Image.new("RGB", (56, 56), (9, 9, 9)).save(png)
    jig = [
        jigsaw_row(
            shuffled_png=png.read_bytes(),
            answer=[2, 1, 4, 3],
            grid=2,
            question="q",
            prompt_style="plain",
            split="test",
            index=i,
            dataset="x",
            source_path="p.png",
        )
        for i in range(3)
    ]
    import pandas as pd

    pd.DataFrame(jig).to_parquet(tmp_path / "jig.parquet")
    tasks = {"prior": str(prior), "jigsaw": str(tmp_path / "jig.parquet")}
    backend = HFBackend(str(tiny_model), max_new_tokens=8, batch_size=2)
    results = evaluate_tasks(backend, tasks, tmp_path / "base", batch_size=2, show_progress=False)
    assert results["prior"]["kind"] == "classification" and results["prior"]["n"] == 4
    assert results["jigsaw"]["kind"] == "jigsaw" and results["jigsaw"]["exact"] == 0.0  # a random model
    assert len(read_predictions(tmp_path / "base" / "prior")) == 4
    # finished tasks are skipped on a rerun
    evaluate_tasks(backend, tasks, tmp_path / "base", batch_size=2, show_progress=False, echo=print)
    assert "done before" in capsys.readouterr().out
    out = tmp_path / "f.json"
    assert (
        F.main(["compare", "--base", str(tmp_path / "base"), "--trained", str(tmp_path / "base"), "--out", str(out)])
        == 0
    )
    result = json.loads(out.read_text())
    assert result["prior"]["accuracy"]["delta"] == 0.0 and result["prior"]["answer_js"] == 0.0
    assert result["jigsaw"]["exact"]["delta"] == 0.0


def test_target_likelihood_is_the_teacher_forced_score(tiny_model, tmp_path):
    import io

    from eval_rows import png_bytes
    from PIL import Image

    from verl_ext.evaluation.backends import HFBackend, ViewInput
    from verl_ext.evaluation.runner import to_messages

    backend = HFBackend(str(tiny_model), batch_size=4)
    view = ViewInput(to_messages([{"role": "user", "content": "<image>q"}]), Image.open(io.BytesIO(png_bytes(0))))
    ((total, n),) = target_logprobs(backend, [(view, "<think>x</think><answer>beach</answer>")])
    # the same tokens scored as the class "beach" with the default "</answer>" suffix after the prefix
    prefix_score = backend.score_answers([view], [""], [["<think>x</think><answer>beach"]])[0][0]
    assert total == pytest.approx(prefix_score, rel=1e-5) and n == len("<think>x</think><answer>beach</answer>")
    assert total < 0
    # hand case of the summary: rows (−2, 2 tokens), (−6, 3 tokens): per-row means −1, −2 -> −1.5; weighted −8/5
    s = summarize([(-2.0, 2), (-6.0, 3)])
    assert s["mean_token_logprob"] == -1.5 and s["token_weighted_logprob"] == -1.6 and s["mean_tokens"] == 2.5


def test_cli_user_errors_are_one_line(tmp_path, capsys):
    code = F.main(["compare", "--base", str(tmp_path), "--trained", str(tmp_path), "--out", str(tmp_path / "x.json")])
    assert code == 2 and "no task evaluated" in capsys.readouterr().err


def test_a_prior_task_without_class_names_is_refused_not_scored_one(tmp_path, capsys):
    # rows with empty class_names: the vocabulary is the label alone, so a random model's teacher-forced accuracy is 1
    rows = [make_row(i, UCM_VOCAB[i % 3], UCM_VOCAB, None) for i in range(3)]
    for row in rows:
        row["extra_info"]["class_names"] = []
    path = write_rows(tmp_path / "bare.parquet", rows)
    argv = ["evaluate", "--model", str(tmp_path / "unused"), "--out", str(tmp_path / "e")]
    assert F.main([*argv, "--tasks", f"bare={path}"]) == 2
    assert "3 of 3 rows" in capsys.readouterr().err
    # existing evaluations scored over one class: compare refuses (a fall 100 % -> 0 % would read "format changed")
    one = [{"a": 1.0}] * 60
    with pytest.raises(ValueError, match="fewer than 2 classes"):
        F.compare_task(_records(["a"] * 60, ["a"] * 60, one), _records([None] * 60, ["a"] * 60, one))


def test_repeated_row_ids_name_the_file(tmp_path, capsys):
    rows = [make_row(i % 2, UCM_VOCAB[i % 3], UCM_VOCAB, None) for i in range(4)]  # ids 0, 1, 0, 1
    path = write_rows(tmp_path / "dup.parquet", rows)
    argv = ["evaluate", "--model", str(tmp_path / "unused"), "--out", str(tmp_path / "e")]
    assert F.main([*argv, "--tasks", f"dup={path}"]) == 2
    err = capsys.readouterr().err
    assert "dup.parquet repeats row ids" in err and "[0, 1]" in err
    records = _records(["a"] * 4, ["a"] * 4, [{"a": 0.9, "b": 0.1}] * 4)
    records[1]["index"] = 0
    with pytest.raises(ValueError, match=r"base run: row ids \[0\] occur more than once"):
        F.compare_task(records, records, where=("base run", "trained run"))


def test_a_task_name_with_a_slash_is_refused(tmp_path, capsys):
    path = write_rows(tmp_path / "t.parquet", [make_row(i, UCM_VOCAB[i % 3], UCM_VOCAB, None) for i in range(2)])
    argv = ["evaluate", "--model", str(tmp_path / "unused"), "--out", str(tmp_path / "e")]
    assert F.main([*argv, "--tasks", f"rs/ucm={path}"]) == 2
    assert "task name 'rs/ucm'" in capsys.readouterr().err


def test_another_models_evaluation_under_out_is_not_reused(tiny_model, tmp_path, capsys):
    path = write_rows(tmp_path / "t.parquet", [make_row(i, UCM_VOCAB[i % 3], UCM_VOCAB, None) for i in range(2)])

    def finished(out, model):  # a finished evaluation of `model` (an older record: no max_new_tokens)
        run = {"model": str(model), "backend": "hf", "seed": 0, "task": "prior", "data": str(path), "limit": None}
        (out / "prior").mkdir(parents=True)
        (out / "prior" / "metrics.json").write_text(json.dumps({"kind": "classification", "n": 2, "run": run}))

    finished(tmp_path / "eval_a", tmp_path / "model_a")
    argv = [
        "evaluate",
        "--tasks",
        f"prior={path}",
        "--no-progress",
        "--max-new-tokens",
        "4",
        "--model",
        str(tiny_model),
    ]
    assert F.main([*argv, "--out", str(tmp_path / "eval_a")]) == 2  # model B into model A's folder
    err = capsys.readouterr().err
    assert "holds an evaluation of another run (model" in err and "model_a" in err
    finished(tmp_path / "eval_b", tiny_model)  # the same model's own folder is reused
    assert F.main([*argv, "--out", str(tmp_path / "eval_b")]) == 0
    assert "done before" in capsys.readouterr().out
