"""DC loss term and D_i: aggregation through verl's agg_loss, weight, detach, estimators, bounds."""

import math

import pytest
import torch
from verl.trainer.ppo.core_algos import agg_loss

from verl_ext.config import DomainConstraintConfig, DomainShapingConfig
from verl_ext.divergences import full_vocab_divergence
from verl_ext.domain_loss import domain_consistency, domain_constraint_loss


def _views(seed: int, batch=4, length=6, vocab=17):
    gen = torch.Generator().manual_seed(seed)
    orig = torch.randn(batch, length, vocab, generator=gen)
    trans = orig + 0.5 * torch.randn(batch, length, vocab, generator=gen)
    mask = (torch.rand(batch, length, generator=gen) < 0.75).float()
    mask[:, 0] = 1.0
    return orig, trans, mask


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
def test_loss_is_weighted_agg_loss_of_kl_trans_to_orig(mode):
    orig, trans, mask = _views(0)
    loss, metrics = domain_constraint_loss(orig, trans, mask, DomainConstraintConfig(weight=2.0), loss_agg_mode=mode)
    expected = agg_loss(full_vocab_divergence(trans, orig, mask, "kl"), mask, mode)  # KL(π^D ‖ π)
    torch.testing.assert_close(loss, 2.0 * expected)
    assert metrics["actor/domain_loss"] == pytest.approx(expected.item(), rel=1e-6)


def test_config_agg_mode_overrides_actor_mode():
    orig, trans, mask = _views(1)
    cfg = DomainConstraintConfig(loss_agg_mode="seq-mean-token-mean")
    loss, _ = domain_constraint_loss(orig, trans, mask, cfg, loss_agg_mode="token-mean")
    expected = agg_loss(full_vocab_divergence(trans, orig, mask, "kl"), mask, "seq-mean-token-mean")
    torch.testing.assert_close(loss, expected)


def test_weight_zero_or_disabled_adds_nothing():
    orig, trans, mask = _views(2)
    for cfg in (DomainConstraintConfig(weight=0.0), DomainConstraintConfig(enable=False)):
        loss, metrics = domain_constraint_loss(orig, trans, mask, cfg)
        assert loss.item() == 0.0 and metrics == {}


def test_gradient_through_both_views_or_only_the_original():
    orig, trans, mask = _views(3)
    o1, t1 = orig.clone().requires_grad_(), trans.clone().requires_grad_()
    domain_constraint_loss(o1, t1, mask, DomainConstraintConfig())[0].backward()
    assert o1.grad.abs().sum() > 0 and t1.grad.abs().sum() > 0
    o2, t2 = orig.clone().requires_grad_(), trans.clone().requires_grad_()
    domain_constraint_loss(o2, t2, mask, DomainConstraintConfig(detach_transformed=True))[0].backward()
    assert t2.grad is None
    torch.testing.assert_close(o2.grad, o1.grad)  # the original view's gradient does not depend on the detach


def test_sampled_token_k3_estimator_uses_log_probs():
    # log π^D(o) = ln 0.5, log π(o) = ln 0.25 on both tokens: k3 = 0.5 + ln 2 - 1 per token; token-mean = same.
    trans_lp = torch.full((1, 2), math.log(0.5))
    orig_lp = torch.full((1, 2), math.log(0.25))
    mask = torch.ones(1, 2)
    loss, _ = domain_constraint_loss(orig_lp, trans_lp, mask, DomainConstraintConfig(estimator="k3"))
    assert loss.item() == pytest.approx(0.5 + math.log(2) - 1, abs=1e-6)


def test_consistency_js_in_unit_interval_and_mean_over_sample_tokens():
    orig, trans, mask = _views(4)
    d = domain_consistency(orig, trans, mask, DomainShapingConfig())
    per_token = full_vocab_divergence(trans, orig, mask, "js")
    expected = (per_token * mask).sum(-1) / mask.sum(-1)
    torch.testing.assert_close(d, expected)
    assert ((d >= 0) & (d <= 1)).all() and not d.requires_grad
    same = domain_consistency(orig, orig.clone(), mask, DomainShapingConfig())
    assert same.abs().max().item() < 1e-6


def test_consistency_kl_is_capped_at_one():
    # p = (1, 0) on the transformed view, q = (1/2, 1/2): KL(p‖q) = ln 2 = 0.693 (kept); a sharper q gives
    # KL = -ln q(0) > 1 -> capped to 1.
    trans = torch.tensor([[[0.0, -math.inf]], [[0.0, -math.inf]]])
    orig = torch.tensor([[[0.0, 0.0]], [[0.0, 5.0]]])  # q(0) = 1/(1+e^5) -> KL = ln(1 + e^5) = 5.0067
    mask = torch.ones(2, 1)
    d = domain_consistency(orig, trans, mask, DomainShapingConfig(divergence="kl"))
    torch.testing.assert_close(d, torch.tensor([math.log(2), 1.0]))
