"""Sequence-level consistency (the JS integrand of the sampled response's likelihood ratio) and the answer span."""

import math

import mpmath
import pytest
import torch

from verl_ext.domain_loss import answer_span, js_integrand, sampled_log_ratio, sequence_consistency

mpmath.mp.dps = 60


def _f_reference(log_ratio: float) -> float:
    """½[log₂(2/(1+r)) + r·log₂(2r/(1+r))] at 60 digits (the definition, no rearrangement)."""
    r = mpmath.e ** mpmath.mpf(log_ratio)
    return float(0.5 * (mpmath.log(2 / (1 + r), 2) + r * mpmath.log(2 * r / (1 + r), 2)))


LOG_RATIOS = [-800.0, -50.0, -3.0, -1.0, -0.1, -1.001e-3, -0.999e-3, -1e-6, -1e-9, 0.0, 1e-9, 1e-6, 0.999e-3]
LOG_RATIOS += [1.001e-3, 0.1, 1.0, 3.0, 50.0, 700.0]


def test_js_integrand_matches_the_definition_in_high_precision():
    values = js_integrand(torch.tensor(LOG_RATIOS, dtype=torch.float64))
    for log_ratio, value in zip(LOG_RATIOS, values.tolist()):
        assert value == pytest.approx(_f_reference(log_ratio), rel=1e-9, abs=1e-300), log_ratio


def test_js_integrand_hand_values_and_limits():
    # f(1) = ½[log₂ 1 + log₂ 1] = 0; f(0) = ½ log₂ 2 = ½; f(3) = ½[log₂ ½ + 3 log₂ 1.5] = ½[-1 + 1.7549] = 0.37744
    values = js_integrand(torch.tensor([0.0, -math.inf, math.log(3.0), math.inf, 1e4], dtype=torch.float64))
    assert values[0].item() == 0.0 and values[1].item() == 0.5
    assert values[2].item() == pytest.approx(0.5 * (-1 + 3 * math.log2(1.5)), rel=1e-12)
    assert values[3].item() == math.inf and values[4].item() == math.inf  # f ~ r/2: no NaN, capped later
    assert values.dtype == torch.float64 and not torch.isnan(values).any()


def test_the_mean_of_f_over_responses_sampled_from_pi_is_the_sequence_js():
    # Two "responses" of two tokens each over a vocabulary of 3: enumerate every sequence o, weight f(π^D(o)/π(o))
    # by π(o), and compare with the JS (bits) between the two sequence distributions computed directly.
    gen = torch.Generator().manual_seed(0)
    pi = torch.randn(2, 3, dtype=torch.float64, generator=gen).log_softmax(-1)  # per position, independent
    pi_d = torch.randn(2, 3, dtype=torch.float64, generator=gen).log_softmax(-1)
    seqs = [(a, b) for a in range(3) for b in range(3)]
    log_p = torch.tensor([pi[0, a] + pi[1, b] for a, b in seqs])  # log π(o)
    log_pd = torch.tensor([pi_d[0, a] + pi_d[1, b] for a, b in seqs])  # log π^D(o)
    token_ratios = torch.tensor([[pi_d[0, a] - pi[0, a], pi_d[1, b] - pi[1, b]] for a, b in seqs])  # [9, 2]
    scores = sequence_consistency(token_ratios, torch.ones(9, 2))  # f(r) per sequence
    expectation = (log_p.exp() * scores).sum()
    m = 0.5 * (log_p.exp() + log_pd.exp())
    js = 0.5 * (log_p.exp() * (log_p - m.log())).sum() + 0.5 * (log_pd.exp() * (log_pd - m.log())).sum()
    assert expectation.item() == pytest.approx(js.item() / math.log(2), rel=1e-12)
    assert 0 < expectation.item() < 1


def test_sequence_consistency_sums_only_the_scope_and_one_sample_can_exceed_one():
    # log ratios 0.5, 9, 0.25 with the middle token out of scope: l = 0.75, f(e^0.75) = 0.1244; the full sum 9.75 gives
    # f ≈ e^9.75 / 2 - ... > 1 (a per-sample value is not a JS; sample_consistency caps D_i at 1).
    log_ratio = torch.tensor([[0.5, 9.0, 0.25]])
    scoped = sequence_consistency(log_ratio, torch.tensor([[1.0, 0.0, 1.0]]))
    assert scoped.item() == pytest.approx(_f_reference(0.75), rel=1e-12)
    assert sequence_consistency(log_ratio, torch.ones(1, 3)).item() > 1


def test_sampled_log_ratio_is_the_labels_log_probability_difference():
    # vocab 2, label 1: log π^D(1) = log ½ (logits 0, 0), log π(1) = log ¾ (logits 0, ln 3) -> ln(2/3)
    trans, orig = torch.zeros(1, 1, 2), torch.tensor([[[0.0, math.log(3.0)]]])
    out = sampled_log_ratio(trans, orig, torch.ones(1, 1, dtype=torch.long), torch.ones(1, 1))
    assert out.item() == pytest.approx(math.log(2 / 3), abs=1e-6)


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        # think, then the answer "forest" split over two tokens
        (["<think>", "x", "</think>", "<answer>", "for", "est", "</answer>"], [0, 0, 0, 0, 1, 1, 0]),
        # BPE merged the open tag's end with the answer's start: that token overlaps the answer, so it counts
        (["<answer", ">for", "est", "</", "answer>"], [0, 1, 1, 0, 0]),
        # an empty answer has no tokens
        (["<answer>", "</answer>"], [0, 0]),
        # not well formed: no close tag, two answers, close before open -> no span at all
        (["<answer>", "forest"], [0, 0]),
        (["<answer>", "a", "</answer>", "<answer>", "b", "</answer>"], [0] * 6),
        (["</answer>", "a", "<answer>"], [0, 0, 0]),
        ([], []),
        # tags spelt inside a token with surrounding text, answer with spaces and a newline
        (["ok <answer> ", "dense\n", "forest </answer> end"], [1, 1, 1]),
    ],
)
def test_answer_span_from_token_pieces(pieces, expected):
    assert answer_span(pieces) == [bool(e) for e in expected]
