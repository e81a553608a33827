"""The data-shift measure of arXiv 2506.23508: how likely a method's training targets are under the base model.

    python -m verl_ext.evaluation.forgetting likelihood --model BASE --data sft=runs/sft/sft_train.parquet \\
        --data sft_rollouts=runs/grpo/sft_rollouts.parquet --out runs/likelihood.json [--limit 256]

For each SFT row (verl's multi-turn layout: `messages` = user turn with "<image>" + assistant target, `images`), the
target is scored teacher-forced after the prompt and image with the evaluation backend (`score_answers(...,
suffix="")`: Σ_t log π_base(y_t | x, y_<t)), and divided by its token count. Reported per data set: the mean over
rows of the per-token mean (`mean_token_logprob`), the token-weighted mean (`token_weighted_logprob` = Σ log p / Σ
tokens), its exponentiated negative (`perplexity`) and the mean target length.

Note:
    The target is the decoded text re-tokenised (what verl's SFT trainer trains on), without the closing
    `<|im_end|>`; for rollouts this can differ from the sampled token ids at a few BPE boundaries.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from verl_ext.evaluation.backends import EvalBackend, ViewInput
from verl_ext.evaluation.runner import to_messages


def sft_targets(path: str | Path, limit: int | None = None, seed: int = 0) -> list[tuple[ViewInput, str]]:
    """(prompt view, target text) of each row of an SFT parquet; a seeded subset of `limit` rows if given."""
    import pyarrow.parquet as pq
    from PIL import Image

    records = pq.read_table(path, columns=["messages", "images"]).to_pylist()
    if limit is not None and len(records) > limit:
        keep = np.sort(np.random.default_rng(seed).choice(len(records), size=limit, replace=False))
        records = [records[i] for i in keep]
    out = []
    for i, rec in enumerate(records):
        messages = rec["messages"]
        if not messages or messages[-1]["role"] != "assistant":
            raise ValueError(f"{path} row {i}: the last message must be the assistant target")
        image = Image.open(io.BytesIO(rec["images"][0]["bytes"])).convert("RGB")
        out.append((ViewInput(to_messages(messages[:-1]), image), str(messages[-1]["content"])))
    return out


def target_logprobs(backend: Any, items: Sequence[tuple[ViewInput, str]], batch_size: int = 8) -> list[tuple]:
    """(Σ log p, number of tokens) of each target under `backend`'s model, teacher-forced after its prompt."""
    out = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        views, targets = [v for v, _ in chunk], [t for _, t in chunk]
        sums = backend.score_answers(views, [""] * len(chunk), [[t] for t in targets], suffix="")
        for total, target in zip(sums, targets):
            n = len(backend.tokenizer(target, add_special_tokens=False)["input_ids"])
            out.append((float(total[0]), n))
    return out


def summarize(pairs: Sequence[tuple[float, int]]) -> dict[str, float]:
    """Per-row and token-weighted mean log-likelihood of `(Σ log p, tokens)` pairs (see the module docstring)."""
    pairs = [(s, n) for s, n in pairs if n > 0]
    if not pairs:
        nan = float("nan")
        return {"n": 0, "mean_token_logprob": nan, "token_weighted_logprob": nan, "perplexity": nan, "mean_tokens": nan}
    sums, counts = np.array([s for s, _ in pairs]), np.array([n for _, n in pairs])
    weighted = float(sums.sum() / counts.sum())
    return {
        "n": len(pairs),
        "mean_token_logprob": float(np.mean(sums / counts)),
        "token_weighted_logprob": weighted,
        "perplexity": float(math.exp(-weighted)),
        "mean_tokens": float(counts.mean()),
    }


def data_likelihood(
    backend: EvalBackend, datasets: dict[str, str], limit: int | None = None, batch_size: int = 8, seed: int = 0
) -> dict[str, dict[str, float]]:
    """{name: summary} of each SFT parquet's targets under the (base) model behind `backend`."""
    return {
        name: {**summarize(target_logprobs(backend, sft_targets(path, limit, seed), batch_size)), "data": str(path)}
        for name, path in datasets.items()
    }
