"""bench/bench_consistency_range.py: D_i per (level, scope) option on hand-computed two-token cases, and the range
summary."""

from __future__ import annotations

import math

import pytest
import torch

from bench.bench_consistency_range import option_scores, range_summary

BIG = 50.0  # logits ±50: a distribution within e^-100 of one-hot


def case(labels_pos1: int):
    """One sample, 2 tokens, vocab 2. Original view: (½, ½) at both positions. Transformed view: (½, ½) at position
    0, ≈ (1, 0) at position 1."""
    original = torch.zeros(1, 2, 2)  # [n, T, V]
    transformed = torch.tensor([[[0.0, 0.0], [BIG, -BIG]]])  # [n, T, V]
    labels = torch.tensor([[0, labels_pos1]])  # [n, T]
    return original, transformed, labels


# JS((1,0) ‖ (½,½)) in bits, m = (¾, ¼): ½·log2(1/¾) + ½·[½·log2(½/¾) + ½·log2(½/¼)]
#   = ½·0.415037 + ½·(−0.292481 + 0.5) = 0.311278
JS_POS1 = 0.5 * math.log2(4 / 3) + 0.5 * (0.5 * math.log2(2 / 3) + 0.5)


def f(r: float) -> float:
    """The JS integrand ½[log2(2/(1+r)) + r·log2(2r/(1+r))]."""
    return 0.5 * (math.log2(2 / (1 + r)) + (r * math.log2(2 * r / (1 + r)) if r > 0 else 0.0))


def test_each_option_by_hand():
    original, transformed, labels = case(labels_pos1=0)
    real = torch.tensor([[True, True]])
    answer = torch.tensor([[False, True]])  # the answer is the second token
    got = option_scores(original, transformed, labels, real, answer)
    # token level: per-token JS (0, 0.311278); response = mean of both, answer = the second only
    assert got["token/response"].item() == pytest.approx(JS_POS1 / 2, abs=1e-6)
    assert got["token/answer"].item() == pytest.approx(JS_POS1, abs=1e-6)
    # sequence level: log r = (log ½ − log ½) + (log 1 − log ½) = ln 2, r = 2: f(2) = ½[log2(2/3) + 2·log2(4/3)]
    assert f(2.0) == pytest.approx(0.122556, abs=1e-6)
    assert got["sequence/response"].item() == pytest.approx(f(2.0), abs=1e-6)
    assert got["sequence/answer"].item() == pytest.approx(f(2.0), abs=1e-6)


def test_a_token_the_transformed_view_rules_out_gives_the_integrand_at_zero():
    original, transformed, labels = case(labels_pos1=1)  # π^D(o_2) ≈ e^-100: r ≈ 0, f(0) = ½
    real = torch.tensor([[True, True]])
    got = option_scores(original, transformed, labels, real, real)
    assert got["sequence/response"].item() == pytest.approx(0.5, abs=1e-6)


def test_no_answer_and_padding():
    original, transformed, labels = case(labels_pos1=0)
    real = torch.tensor([[True, False]])  # position 1 is padding: only the identical position counts
    no_answer = torch.tensor([[False, False]])
    got = option_scores(original, transformed, labels, real, no_answer)
    assert {k: v.item() for k, v in got.items()} == {
        "token/response": 0.0,
        "token/answer": 0.0,  # no well-formed answer: D_i = 0 (the trainer's rule)
        "sequence/response": 0.0,
        "sequence/answer": 0.0,
    }


def test_range_summary():
    got = range_summary([0.0, 0.0, 0.1, 0.3])
    assert got["n"] == 4 and got["min"] == 0.0 and got["max"] == 0.3 and got["zero_share"] == 0.5
    assert got["q50"] == pytest.approx(0.05) and got["mean"] == pytest.approx(0.1)
    with pytest.raises(ValueError):
        range_summary([])
