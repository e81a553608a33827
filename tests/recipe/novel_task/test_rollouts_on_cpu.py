"""Rollouts -> SFT data: the rollout_dump records, the correct-rollout selection, the join with the training images."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from tensordict import NonTensorStack, TensorDict

from data_prep.jigsaw import jigsaw_row
from recipe.novel_task import rollouts as R
from recipe.novel_task.rollouts import write_jsonl_atomic
from recipe.novel_task.trainer import rollout_records
from verl_ext.cpu.tiny_qwen25vl import build_tokenizer

GTS = "2 1\n4 3"  # answer_text([2, 1, 4, 3], grid=2): the ground truth of every row of _train_parquet


def _rec(row, step, session, text, score, truncated=False, gts=GTS):
    return {
        "gts": gts,
        "row_index": row,
        "step": step,
        "session": session,
        "key": f"u{row}_{session}_0",
        "output": text,
        "score": score,
        "truncated": truncated,
    }


def test_selection_hand_computed():
    records = [
        _rec(0, 1, 0, "A", 3.0),
        _rec(0, 2, 1, "B", 3.0),  # latest step: kept first for row 0
        _rec(0, 2, 2, " B ", 3.0),  # duplicate of "B" after stripping
        _rec(0, 2, 3, "C", 2.5),  # below the maximum
        _rec(1, 1, 0, "D", 3.0, truncated=True),  # truncated
        _rec(2, 1, 0, "E", 3.0),
    ]
    kept, counts = R.select_correct(records, 3.0, max_per_prompt=1)
    assert [r["output"] for r in kept] == ["B", "E"]
    assert counts == {
        "rollouts": 6,
        "below_min_score": 1,
        "truncated": 1,
        "duplicates": 1,
        "over_max_per_prompt": 1,
        "kept": 2,
        "rows_covered": 2,
    }
    kept, counts = R.select_correct(records, 3.0, max_per_prompt=None)
    assert [r["output"] for r in kept] == ["B", "A", "E"] and counts["duplicates"] == 1
    kept, _ = R.select_correct(records, 3.0, max_per_prompt=None, allow_truncated=True)
    assert "D" in [r["output"] for r in kept]


def _train_parquet(path, n=3):
    rows = [
        jigsaw_row(
            shuffled_png=bytes([i]) * 8,
            answer=[2, 1, 4, 3],
            grid=2,
            question="q",
            prompt_style="plain",
            split="train",
            index=10 + i,
            dataset="x",
            source_path=f"img{i}",
        )
        for i in range(n)
    ]
    pd.DataFrame(rows).to_parquet(path)
    return path


def test_join_puts_each_response_on_its_own_image(tmp_path):
    train = _train_parquet(tmp_path / "train.parquet")
    rows = R.rows_by_index([train])
    kept = [_rec(12, 2, 0, "<think>t</think><answer>2 1\n4 3</answer>", 3.0), _rec(10, 1, 0, "x", 3.0)]
    sft = R.to_sft_rows(kept, rows)
    assert sft[0]["images"][0]["bytes"] == bytes([2]) * 8 and sft[1]["images"][0]["bytes"] == bytes([0]) * 8
    assert sft[0]["messages"][-1] == {"role": "assistant", "content": "<think>t</think><answer>2 1\n4 3</answer>"}
    assert sft[0]["messages"][0]["content"] == "<image>q" and sft[0]["extra_info"]["rollout_step"] == 2
    with pytest.raises(ValueError, match="not in the training parquet"):
        R.to_sft_rows([_rec(99, 1, 0, "x", 3.0)], rows)
    dup = tmp_path / "dup.parquet"
    pd.concat([pd.read_parquet(train)] * 2).to_parquet(dup)
    with pytest.raises(ValueError, match="occurs twice"):
        R.rows_by_index([dup])


def test_cli_end_to_end_and_errors(tmp_path, capsys):
    train = _train_parquet(tmp_path / "train.parquet")
    good = "<think>t</think><answer>2 1\n4 3</answer>"
    write_jsonl_atomic(tmp_path / "dump" / "1.jsonl", [_rec(10, 1, 0, good, 3.0), _rec(11, 1, 0, "bad", 0.0)])
    write_jsonl_atomic(tmp_path / "dump" / "2.jsonl", [_rec(11, 2, 0, good, 3.0)])
    out = tmp_path / "sft.parquet"
    argv = ["to-sft", "--dump", str(tmp_path / "dump"), "--train", str(train), "--out", str(out)]
    assert (
        R.main([*argv, "--answer-only-out", str(tmp_path / "m.parquet"), "--all-out", str(tmp_path / "a.parquet")]) == 0
    )
    assert len(pd.read_parquet(out)) == 2 and len(pd.read_parquet(tmp_path / "a.parquet")) == 3
    matched = pd.read_parquet(tmp_path / "m.parquet")
    assert matched.iloc[0]["messages"][-1]["content"] == "<think></think><answer>2 1\n4 3</answer>"
    assert json.loads((tmp_path / "sft.parquet.json").read_text())["kept"] == 2
    # verl's text-only dump has no row ids: refused with a reason
    write_jsonl_atomic(tmp_path / "verl" / "1.jsonl", [{"input": "x", "output": "y", "score": 1.0, "step": 1}])
    assert R.main(["to-sft", "--dump", str(tmp_path / "verl"), "--train", str(train), "--out", str(out)]) == 2
    assert "rollout_dump" in capsys.readouterr().err
    assert R.main([*argv[:-1], str(tmp_path / "none.parquet"), "--min-score", "4"]) == 2  # nothing reaches 4


def test_rollout_records_from_transfer_queue_fields():
    tok = build_tokenizer()
    eos = tok.eos_token_id
    responses = torch.nested.nested_tensor_from_jagged(
        torch.tensor([72, 105, eos, 65, 66, 67, 68]), offsets=torch.tensor([0, 3, 7])
    )  # "Hi<eos>" (ended) and "ABCD" (hit the 4-token limit)
    prompts = torch.nested.nested_tensor_from_jagged(torch.tensor([80, 81]), offsets=torch.tensor([0, 1, 2]))
    scores = torch.nested.nested_tensor_from_jagged(
        torch.tensor([0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 1.5]), offsets=torch.tensor([0, 3, 7])
    )
    data = TensorDict(
        {
            "responses": responses,
            "prompts": prompts,
            "rm_scores": scores,
            "extra_info": NonTensorStack(
                {"index": 5, "split": "train", "dataset": "s2"}, {"index": 6, "split": "train"}
            ),
            "reward_model": NonTensorStack({"ground_truth": "2 1\n4 3"}, {"ground_truth": "1 2\n4 3"}),
            "data_source": NonTensorStack("jigsaw_2x2", "jigsaw_2x2"),
            "extra_fields": NonTensorStack({"reward_extra_info": {"hit": 1.0, "acc": 1.0}}, {}),
        },
        batch_size=[2],
    )
    recs = rollout_records(["uidB_1_0", "uidA_0_0"], data, tok, step=3, max_response_length=4)
    first, second = recs  # sorted by uid: uidA first
    assert (first["row_index"], first["session"], first["output"], first["truncated"]) == (6, 0, "ABCD", True)
    assert (second["row_index"], second["session"], second["output"], second["truncated"]) == (5, 1, "Hi", False)
    assert second["score"] == 3.0 and second["reward"] == {"hit": 1.0, "acc": 1.0} and second["gts"] == "2 1\n4 3"
    assert second["response_ids"] == [72, 105, eos] and first["step"] == 3 and first["input"] == "Q"


def test_reward_component_metrics_hand_computed():
    from recipe.novel_task.trainer import reward_component_metrics

    fields = [
        {"reward_extra_info": {"acc": 1.0, "hit": 0.5, "tag": "x", "flag": True}},
        {"reward_extra_info": {"acc": 0.0, "hit": 0.25}},
        None,
    ]
    # acc (1 + 0) / 2, hit (0.5 + 0.25) / 2; strings and booleans are not averaged
    assert reward_component_metrics(fields) == {"reward/acc/mean": 0.5, "reward/hit/mean": 0.375}


def test_rollouts_drawn_after_training_by_sampling_a_checkpoint(tmp_path):
    from PIL import Image

    from verl_ext.cpu.tiny_qwen25vl import build_tiny_model_dir

    model = build_tiny_model_dir(tmp_path / "model")
    png = tmp_path / "p.png"
    Image.new("RGB", (56, 56), (90, 20, 20)).save(png)
    rows = [
        jigsaw_row(
            shuffled_png=png.read_bytes(),
            answer=[2, 1, 4, 3],
            grid=2,
            question="q",
            prompt_style="plain",
            split="train",
            index=i,
            dataset="x",
            source_path="p",
        )
        for i in range(2)
    ]
    pd.DataFrame(rows).to_parquet(tmp_path / "train.parquet")
    dump = tmp_path / "dump"
    argv = [
        "sample",
        "--model",
        str(model),
        "--data",
        str(tmp_path / "train.parquet"),
        "--out",
        str(dump),
        "--n",
        "3",
        "--max-new-tokens",
        "6",
        "--reward",
        "dense",
    ]
    assert R.main(argv) == 0
    records = R.read_dump(dump)
    assert len(records) == 6 and {r["row_index"] for r in records} == {0, 1}
    assert len({r["output"] for r in records}) > 1  # sampled (temperature 1), not greedy copies
    assert all(set(r["reward"]) == {"hit", "acc", "format", "answer_valid", "dense"} for r in records)
    out = tmp_path / "sft.parquet"
    to_sft = ["to-sft", "--dump", str(dump), "--train", str(tmp_path / "train.parquet"), "--out", str(out)]
    assert R.main([*to_sft, "--min-score", "0", "--allow-truncated", "--max-per-prompt", "0"]) == 0
    assert 2 <= len(pd.read_parquet(out)) <= 6


def _grid_parquet(path, grid, n, seed):
    """A data_prep jigsaw file's rows: numbered from 0, the permutation drawn from (seed, index)."""
    from verl_ext.jigsaw import draw_permutation, ground_truth_answer

    rows = [
        jigsaw_row(
            shuffled_png=bytes([i]) * 8,
            answer=ground_truth_answer(draw_permutation(grid * grid, seed, i)),
            grid=grid,
            question="q",
            prompt_style="plain",
            split="train",
            index=i,
            dataset="ucm",
            source_path=f"img{i}",
        )
        for i in range(n)
    ]
    pd.DataFrame(rows).to_parquet(path)
    return rows


def test_a_dump_from_another_data_prep_run_is_refused_with_the_counts(tmp_path, capsys):
    # the GRPO run trained on a 2 x 2 file; --train names a 3 x 3 one: the same row ids 0..8, other puzzles
    dumped = _grid_parquet(tmp_path / "grid2.parquet", grid=2, n=9, seed=0)
    _grid_parquet(tmp_path / "grid3.parquet", grid=3, n=9, seed=0)
    records = [
        {**_rec(r["extra_info"]["index"], 1, 0, "x", 3.0, gts=r["reward_model"]["ground_truth"]), **identity}
        for r in dumped
        for identity in [{"data_source": r["data_source"], "dataset": "ucm"}]
    ]
    write_jsonl_atomic(tmp_path / "dump" / "1.jsonl", records)
    argv = ["to-sft", "--dump", str(tmp_path / "dump"), "--out", str(tmp_path / "sft.parquet")]
    assert R.main([*argv, "--train", str(tmp_path / "grid3.parquet")]) == 2
    err = capsys.readouterr().err
    assert "data_source differs in 9 of 9, gts differs in 9 of 9 records" in err and "--train file" in err
    assert not (tmp_path / "sft.parquet").exists()
    assert R.main([*argv, "--train", str(tmp_path / "grid2.parquet")]) == 0  # its own file: accepted
    # another --seed, same grid: the permutations differ (hand-checked: at least one of 9 rows)
    _grid_parquet(tmp_path / "seed1.parquet", grid=2, n=9, seed=1)
    rows = R.rows_by_index([tmp_path / "seed1.parquet"])
    with pytest.raises(ValueError, match=r"gts differs in [1-9] of 9"):
        R.check_join(records, rows)
    # a record without gts cannot be checked
    with pytest.raises(ValueError, match="gts differs in 1 of 1"):
        R.check_join([{**records[0], "gts": None}], R.rows_by_index([tmp_path / "grid2.parquet"]))


def test_sampling_defaults_to_the_gpu_runs_response_length():
    import re
    from pathlib import Path

    script = Path(__file__).resolve().parents[3] / "examples" / "run_qwen25vl_jigsaw.sh"
    length = int(re.search(r'MAX_RESPONSE_LENGTH="\$\{MAX_RESPONSE_LENGTH:-(\d+)\}"', script.read_text()).group(1))
    args = R.build_parser().parse_args(["sample", "--model", "m", "--data", "d", "--out", "o"])
    assert args.max_new_tokens == length == 1024
