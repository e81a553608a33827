"""The HF backend end to end with the tiny offline Qwen2.5-VL: CLI -> metrics.json, predictions.jsonl, PNGs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from eval_rows import UCM_VOCAB, make_row, write_rows

from verl_ext.cpu.tiny_qwen25vl import build_tiny_model_dir
from verl_ext.evaluation import runner
from verl_ext.evaluation.__main__ import main
from verl_ext.evaluation.backends import HFBackend, ViewInput


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(build_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rows = [
        make_row(0, "beach", UCM_VOCAB, ["rot90", "rot180"]),
        make_row(1, "forest", UCM_VOCAB, ["rot90", "rot180"]),
        make_row(2, "river", UCM_VOCAB, ["rot180"]),
    ]
    return write_rows(tmp_path_factory.mktemp("data") / "test.parquet", rows)


def test_cli_end_to_end(model_dir, data, tmp_path) -> None:
    out = tmp_path / "eval"
    argv = ["--model", model_dir, "--data", str(data), "--out", str(out), "--transforms", "rot90,rot180"]
    argv += ["--max-new-tokens", "6", "--batch-size", "2", "--no-progress"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 3 and metrics["classes"] == UCM_VOCAB
    # rot90 is whitelisted for rows 0 and 1 only; rot180 for all three
    assert metrics["views"]["rot90"]["n"] == 2 and metrics["views"]["rot180"]["n"] == 3
    assert metrics["invariance"]["transforms"] == ["rot90", "rot180"]
    assert 0.0 <= metrics["invariance"]["mean_js"] <= 1.0
    assert sum(map(sum, metrics["confusion"]["matrix"])) == 3
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 3 + 2 + 3
    for rec in records:
        assert sum(rec["answer_distribution"].values()) == pytest.approx(1.0, abs=1e-4)
    for png in ("confusion.png", "view_accuracy.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # deterministic: a second run gives the same responses and distributions
    out2 = tmp_path / "eval2"
    assert main([*argv[:5], str(out2), *argv[6:]]) == 0
    assert (out2 / "predictions.jsonl").read_text() == (out / "predictions.jsonl").read_text()


def test_batched_scores_match_unbatched_forward(model_dir, data) -> None:
    (row, *_) = runner.load_rows(data)
    backend = HFBackend(model_dir, max_new_tokens=4, batch_size=2, device="cpu")
    view = ViewInput(row.messages, row.image.transpose(0))  # a flipped view
    prefix = "<think>x</think><answer>"
    vocab = ["beach", "forest", "river", "a"]  # different lengths -> right padding inside a batch
    batched = backend.score_answers([view], [prefix], [vocab])[0]
    proc = backend.processor
    for k, cls in enumerate(vocab):
        enc = proc(text=[backend.prompt_text(view.messages) + prefix], images=[view.image], return_tensors="pt")
        cont = backend.tokenizer(cls + "</answer>", add_special_tokens=False)["input_ids"]
        ids = torch.cat([enc["input_ids"], torch.tensor([cont])], dim=1)
        mm = torch.cat([enc["mm_token_type_ids"], torch.zeros((1, len(cont)), dtype=torch.long)], dim=1)
        with torch.inference_mode():
            logits = backend.model(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                mm_token_type_ids=mm,
                pixel_values=enc["pixel_values"],
                image_grid_thw=enc["image_grid_thw"],
            ).logits[0]
        plen = enc["input_ids"].shape[1]
        logp = torch.log_softmax(logits[plen - 1 : plen - 1 + len(cont)].float(), -1)
        expected = float(logp[torch.arange(len(cont)), torch.tensor(cont)].sum())
        assert batched[k] == pytest.approx(expected, abs=1e-4)
    assert np.all(batched < 0)
