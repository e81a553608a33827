"""DC term and D_i (verl_ext.domain_loss): per-token divergence, aggregation through verl's agg_loss, weight, which
view carries gradient, estimators, bounds."""

import math

import pytest
import torch
from verl.trainer.ppo.core_algos import agg_loss

from verl_ext.domain_loss import constraint_term, gradient_sides, sample_consistency, token_divergence


def _views(seed: int, batch=4, length=6, vocab=17):
    gen = torch.Generator().manual_seed(seed)
    orig = torch.randn(batch, length, vocab, generator=gen)
    trans = orig + 0.5 * torch.randn(batch, length, vocab, generator=gen)
    mask = (torch.rand(batch, length, generator=gen) < 0.75).float()
    mask[:, 0] = 1.0
    return orig, trans, mask


def _kl_loop(trans: torch.Tensor, orig: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) per token in float64, written as the sum over the vocabulary (the reference)."""
    p, q = trans.double().softmax(-1), orig.double().softmax(-1)
    return (p * (p.log() - q.log())).sum(-1)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
def test_term_is_weighted_agg_loss_of_kl_trans_to_orig(mode):
    orig, trans, mask = _views(0)
    per_token = token_divergence(trans, orig, mask, "kl")  # KL(π^D ‖ π)
    torch.testing.assert_close(per_token.double(), _kl_loop(trans, orig) * mask, atol=1e-5, rtol=1e-4)
    term, divergence, token_mean = constraint_term(per_token, mask, 2.0, mode)
    torch.testing.assert_close(divergence, agg_loss(per_token, mask, mode))
    torch.testing.assert_close(term, 2.0 * divergence)
    assert token_mean.item() == pytest.approx(((per_token * mask).sum() / mask.sum()).item(), rel=1e-6)


def test_term_over_a_scope_counts_only_its_tokens():
    # per-token values 1, 2, 3, 4 on one sample; scope = tokens 1 and 3 -> token mean (2 + 4) / 2 = 3;
    # seq-mean-token-mean over the one sample = 3 as well.
    per_token = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    scope = torch.tensor([[0.0, 1.0, 0.0, 1.0]])
    term, divergence, token_mean = constraint_term(per_token, scope, 0.5, "seq-mean-token-mean")
    assert divergence.item() == pytest.approx(3.0) and token_mean.item() == pytest.approx(3.0)
    assert term.item() == pytest.approx(1.5)


@pytest.mark.parametrize(
    ("target", "orig_grad", "trans_grad"),
    [("both", True, True), ("original", False, True), ("transformed", True, False)],
)
def test_target_decides_which_view_carries_gradient(target, orig_grad, trans_grad):
    assert gradient_sides(target) == (orig_grad, trans_grad)
    orig, trans, mask = _views(3)
    o, t = orig.clone().requires_grad_(orig_grad), trans.clone().requires_grad_(trans_grad)
    per_token = token_divergence(t, o, mask, "kl")
    constraint_term(per_token, mask, 1.0)[0].backward()
    assert (o.grad is not None and bool(o.grad.abs().sum() > 0)) is orig_grad
    assert (t.grad is not None and bool(t.grad.abs().sum() > 0)) is trans_grad
    # the gradient on a view that learns does not depend on whether the other one does
    o_all, t_all = orig.clone().requires_grad_(), trans.clone().requires_grad_()
    constraint_term(token_divergence(t_all, o_all, mask, "kl"), mask, 1.0)[0].backward()
    if orig_grad:
        torch.testing.assert_close(o.grad, o_all.grad)
    if trans_grad:
        torch.testing.assert_close(t.grad, t_all.grad)


def test_unknown_target_is_refused():
    with pytest.raises(ValueError, match="target must be one of"):
        gradient_sides("detached")


def test_sampled_token_k3_estimator_uses_the_labels_log_probs():
    # vocab 2, label 0: π^D(o) = 0.5 (logits 0, 0), π(o) = 0.25 (logits 0, ln 3): k3 = e^(ln .25 - ln .5) - 1 -
    # (ln .25 - ln .5) = 0.5 - 1 + ln 2 per token; token-mean = the same.
    trans = torch.zeros(1, 2, 2)
    orig = torch.tensor([[[0.0, math.log(3.0)]] * 2])
    mask, labels = torch.ones(1, 2), torch.zeros(1, 2, dtype=torch.long)
    per_token = token_divergence(trans, orig, mask, "kl", "k3", labels=labels)
    assert per_token.tolist()[0] == pytest.approx([0.5 - 1 + math.log(2)] * 2, abs=1e-6)
    with pytest.raises(ValueError, match="needs the labels"):
        token_divergence(trans, orig, mask, "kl", "k3")


def test_consistency_js_in_unit_interval_and_mean_over_the_scope():
    orig, trans, mask = _views(4)
    per_token = token_divergence(trans, orig, mask, "js")
    d = sample_consistency(per_token, mask)
    torch.testing.assert_close(d, (per_token * mask).sum(-1) / mask.sum(-1))
    assert ((d >= 0) & (d <= 1)).all() and not d.requires_grad
    same = sample_consistency(token_divergence(orig, orig.clone(), mask, "js"), mask)
    assert same.abs().max().item() < 1e-6


def test_consistency_of_an_empty_scope_is_zero_and_kl_is_capped():
    # sample 0: values 0.2, 0.6 in scope -> 0.4; sample 1: no in-scope token -> 0; sample 2: KL 5.0 -> capped to 1.
    per_token = torch.tensor([[0.2, 0.6], [0.9, 0.9], [5.0, 5.0]])
    scope = torch.tensor([[1.0, 1.0], [0.0, 0.0], [1.0, 1.0]])
    assert sample_consistency(per_token, scope).tolist() == pytest.approx([0.4, 0.0, 1.0])


def test_consistency_kl_of_a_point_mass():
    # p = (1, 0) on the transformed view, q = (1/2, 1/2): KL(p‖q) = ln 2 = 0.693 (kept); a sharper q gives
    # KL = -ln q(0) = ln(1 + e^5) = 5.0067 > 1 -> capped to 1.
    trans = torch.tensor([[[0.0, -math.inf]], [[0.0, -math.inf]]])
    orig = torch.tensor([[[0.0, 0.0]], [[0.0, 5.0]]])
    mask = torch.ones(2, 1)
    d = sample_consistency(token_divergence(trans, orig, mask, "kl"), mask)
    torch.testing.assert_close(d, torch.tensor([math.log(2), 1.0]))
