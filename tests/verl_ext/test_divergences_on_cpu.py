"""verl_ext.divergences: hand-computed cases, float64 references, properties, chunking and gradients."""

import math

import pytest
import torch

from verl_ext.divergences import (
    default_chunk_tokens,
    full_vocab_divergence,
    masked_token_mean,
    per_sample_mean,
    sampled_token_divergence,
)


def _reference(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor, kind: str) -> torch.Tensor:
    """Naive float64 D(p‖q) per token; -inf logits become -1e4 (exp underflows to exactly 0 in float64)."""
    a = a.double().masked_fill(torch.isinf(a), -1e4)
    b = b.double().masked_fill(torch.isinf(b), -1e4)
    log_p, log_q = a.log_softmax(-1), b.log_softmax(-1)
    p, q = log_p.exp(), log_q.exp()
    if kind == "kl":
        out = (p * (log_p - log_q)).sum(-1)
    else:
        log_m = torch.logaddexp(log_p, log_q) - math.log(2)  # finite: the -1e4 logits keep log p, log q finite
        out = 0.5 * ((p * (log_p - log_m)).sum(-1) + (q * (log_q - log_m)).sum(-1)) / math.log(2)
    return out * mask


def _random_case(seed: int, batch=3, length=7, vocab=13, inf_fraction=0.1):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(batch, length, vocab, generator=gen, dtype=torch.float64) * 3
    b = torch.randn(batch, length, vocab, generator=gen, dtype=torch.float64) * 3
    # -inf on the same entries of both views (a token both views forbid), and one more only in p (p = 0 there).
    both = torch.rand(batch, length, vocab, generator=gen) < inf_fraction
    both[..., 0] = False  # keep every row a distribution
    a[both], b[both] = -math.inf, -math.inf
    a[0, 0, 1] = -math.inf
    b[0, 0, 1] = 0.0
    mask = torch.rand(batch, length, generator=gen) < 0.7
    mask[-1] = False  # a fully masked row
    return a, b, mask


def test_hand_computed_two_token_vocab():
    # p = softmax([0, 0]) = (1/2, 1/2); q = softmax([ln 3, 0]) = (3/4, 1/4).
    # KL(p‖q) = 1/2 ln(2/3) + 1/2 ln(2) = 1/2 ln(4/3) = 0.143841...
    # m = (5/8, 3/8); JS = [1/2 (1/2 ln(4/5) + 1/2 ln(4/3)) + 1/2 (3/4 ln(6/5) + 1/4 ln(2/3))] / ln 2 = 0.048794...
    a = torch.tensor([[[0.0, 0.0]]])
    b = torch.tensor([[[math.log(3.0), 0.0]]])
    mask = torch.ones(1, 1)
    kl = 0.5 * math.log(4 / 3)
    js_p = 0.5 * math.log(4 / 5) + 0.5 * math.log(4 / 3)  # KL(p‖m)
    js_q = 0.75 * math.log(6 / 5) + 0.25 * math.log(2 / 3)  # KL(q‖m)
    js = 0.5 * (js_p + js_q) / math.log(2)
    assert full_vocab_divergence(a, b, mask, "kl").item() == pytest.approx(kl, abs=1e-7)
    assert full_vocab_divergence(a, b, mask, "js").item() == pytest.approx(js, abs=1e-7)


def test_disjoint_supports_give_js_one_and_kl_inf():
    # p = (1, 0), q = (0, 1): JS = 1 bit exactly, KL(p‖q) = +inf.
    a = torch.tensor([[[0.0, -math.inf]]])
    b = torch.tensor([[[-math.inf, 0.0]]])
    mask = torch.ones(1, 1)
    assert full_vocab_divergence(a, b, mask, "js").item() == pytest.approx(1.0, abs=1e-7)
    assert full_vocab_divergence(a, b, mask, "kl").item() == math.inf


@pytest.mark.parametrize("kind", ["kl", "js"])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("chunk", [1, 4, None])
def test_matches_float64_reference_values_and_gradients(kind, seed, chunk):
    a, b, mask = _random_case(seed)
    if kind == "kl":
        b[0, 0, 1] = 0.0  # q > 0 wherever p > 0 keeps KL finite
    a1, b1 = a.clone().requires_grad_(), b.clone().requires_grad_()
    out = full_vocab_divergence(a1, b1, mask, kind, chunk_tokens=chunk)
    a2 = a.masked_fill(torch.isinf(a), -1e4).requires_grad_()
    b2 = b.masked_fill(torch.isinf(b), -1e4).requires_grad_()
    ref = _reference(a2, b2, mask, kind)
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=1e-9)
    weights = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 100))
    (out * weights).sum().backward()
    (ref * weights).sum().backward()
    torch.testing.assert_close(a1.grad, a2.grad, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(b1.grad, b2.grad, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("kind", ["kl", "js"])
def test_bf16_and_fp32_inputs_within_1e_5_of_float64(kind):
    a, b, mask = _random_case(5, batch=2, length=9, vocab=1000, inf_fraction=0.0)
    ref = _reference(a, b, mask, kind)
    out32 = full_vocab_divergence(a.float(), b.float(), mask, kind)
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), ref, atol=1e-5, rtol=0)
    # bf16 logits: the divergence of the rounded logits, computed in fp32.
    a16, b16 = a.bfloat16(), b.bfloat16()
    torch.testing.assert_close(
        full_vocab_divergence(a16, b16, mask, kind).double(),
        _reference(a16.double(), b16.double(), mask, kind),
        atol=1e-5,
        rtol=0,
    )


@pytest.mark.parametrize("noise", [1e-2, 1e-3, 1e-4])
def test_fp32_near_identical_views_accurate_far_below_the_old_floor(noise):
    # Logits differing by `noise`: KL ≈ ½ Var_p(b − a) ≈ noise² / 2 (5e-5 .. 5e-9 nats), JS ≈ KL / (4 ln 2).
    # Σ p (a − b) − (lse(a) − lse(b)) in fp32 has an absolute error of ~1e-6 nats (each lse ≈ 12.8 ± 1e-6) and
    # goes negative; the log1p/expm1 form is within ~1e-10 of float64 here. Both tolerances are far below that floor.
    gen = torch.Generator().manual_seed(11)
    a = torch.randn(2, 16, 4096, generator=gen, dtype=torch.float64) * 3
    b = a + noise * torch.randn(a.shape, generator=gen, dtype=torch.float64)
    a32, b32 = a.float(), b.float()
    mask = torch.ones(2, 16, dtype=torch.bool)
    for kind in ("kl", "js"):
        out = full_vocab_divergence(a32, b32, mask, kind)
        ref = _reference(a32.double(), b32.double(), mask, kind)  # the same fp32 logits, in float64
        assert (out >= 0).all(), kind
        torch.testing.assert_close(out.double(), ref, atol=1e-9, rtol=1e-3)


@pytest.mark.parametrize("seed", range(4))
def test_properties_js_symmetric_bounded_kl_nonnegative_zero_for_equal_views(seed):
    a, b, mask = _random_case(seed)
    b[0, 0, 1] = -math.inf  # same support on that entry too
    js_ab = full_vocab_divergence(a, b, mask, "js")
    js_ba = full_vocab_divergence(b, a, mask, "js")
    torch.testing.assert_close(js_ab, js_ba, atol=1e-12, rtol=0)
    assert (js_ab >= 0).all() and (js_ab <= 1).all()
    kl = full_vocab_divergence(a, b, mask, "kl")
    assert (kl >= 0).all()
    for kind in ("kl", "js"):
        same = full_vocab_divergence(a, a.clone(), mask, kind)
        assert same.abs().max().item() < 1e-12
        # JS is 0 only for equal views: every valid token here has two different distributions.
    assert (js_ab[mask] > 0).all()


@pytest.mark.parametrize("kind", ["kl", "js"])
def test_masked_tokens_change_nothing(kind):
    a, b, mask = _random_case(7)
    b[0, 0, 1] = 0.0
    a1, b1 = a.clone().requires_grad_(), b.clone().requires_grad_()
    out1 = full_vocab_divergence(a1, b1, mask, kind)
    out1.sum().backward()
    # Garbage (even NaN) in masked positions changes neither the values nor the gradients of valid tokens.
    a_garbage, b_garbage = a.clone(), b.clone()
    a_garbage[~mask] = math.nan
    b_garbage[~mask] = 1e6
    a2, b2 = a_garbage.requires_grad_(), b_garbage.requires_grad_()
    out2 = full_vocab_divergence(a2, b2, mask, kind)
    out2.sum().backward()
    assert torch.equal(out1, out2)
    assert (out1[~mask] == 0).all()
    assert torch.equal(a1.grad, a2.grad) and torch.equal(b1.grad, b2.grad)
    assert (a1.grad[~mask] == 0).all()


def test_nan_logit_is_reported_not_hidden():
    a, b, mask = _random_case(3, inf_fraction=0.0)
    mask[:] = True
    a[1, 2, 5] = math.nan
    for kind in ("kl", "js"):
        out = full_vocab_divergence(a, b, mask, kind)
        assert math.isnan(out[1, 2].item())
        assert torch.isfinite(out[0]).all()


def test_detached_view_gets_no_gradient_and_other_view_matches():
    a, b, mask = _random_case(4, inf_fraction=0.0)
    a1, b1 = a.clone().requires_grad_(), b.clone().requires_grad_()
    full_vocab_divergence(a1, b1, mask, "kl").sum().backward()
    a2, b2 = a.clone().requires_grad_(), b.clone().requires_grad_()
    full_vocab_divergence(a2.detach(), b2, mask, "kl").sum().backward()
    assert a2.grad is None
    torch.testing.assert_close(b2.grad, b1.grad)


def test_input_checks():
    a = torch.zeros(2, 3, 5)
    with pytest.raises(ValueError, match="response_mask"):
        full_vocab_divergence(a, a, torch.ones(2, 4), "kl")
    with pytest.raises(ValueError, match="kind"):
        full_vocab_divergence(a, a, torch.ones(2, 3), "tv")
    with pytest.raises(ValueError, match="logits"):
        full_vocab_divergence(a, torch.zeros(2, 3, 6), torch.ones(2, 3), "kl")


def test_default_chunk_is_bounded_by_elements():
    # 2^25 elements / 151,936 vocab = 220 tokens (floor); never below one token.
    assert default_chunk_tokens(151_936) == 220
    assert default_chunk_tokens(10**9) == 1


def test_reductions_hand_computed():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    mask = torch.tensor([[1, 1, 0], [0, 0, 1], [0, 0, 0]])
    # token mean over the 3 set tokens: (1 + 2 + 6) / 3 = 3
    assert masked_token_mean(values, mask).item() == pytest.approx(3.0)
    # per sample: (1 + 2) / 2 = 1.5; 6 / 1 = 6; fully masked row -> 0
    assert per_sample_mean(values, mask).tolist() == [1.5, 6.0, 0.0]


def test_sampled_token_estimates_hand_computed():
    # log p = ln 0.5, log q = ln 0.25: k1 = ln 2 = 0.6931; k3 = q/p - ln(q/p) - 1 = 0.5 + ln 2 - 1 = 0.1931
    lp = torch.tensor([[math.log(0.5), math.log(0.5)]])
    lq = torch.tensor([[math.log(0.25), math.log(0.25)]])
    mask = torch.tensor([[1.0, 0.0]])
    assert sampled_token_divergence(lp, lq, mask, "k1").tolist()[0] == pytest.approx([math.log(2), 0.0], abs=1e-6)
    assert sampled_token_divergence(lp, lq, mask, "k3").tolist()[0] == pytest.approx(
        [0.5 + math.log(2) - 1, 0.0], abs=1e-6
    )


@pytest.mark.parametrize("seed", range(2))
def test_fused_no_grad_pass_equals_single_kind_calls(seed):
    from verl_ext.divergences import full_vocab_divergences

    a, b, mask = _random_case(seed)
    b[0, 0, 1] = 0.0
    both = full_vocab_divergences(a.float(), b.float(), mask, ("kl", "js"), chunk_tokens=3)
    for kind in ("kl", "js"):
        assert torch.equal(both[kind], full_vocab_divergence(a.float(), b.float(), mask, kind, chunk_tokens=3))


def test_sampled_log_probs_match_log_softmax_gather_on_masked_positions():
    from verl_ext.divergences import sampled_log_probs

    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 5, 11, generator=gen, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 11, (2, 5), generator=gen)
    mask = torch.rand(2, 5, generator=gen) < 0.6
    out = sampled_log_probs(logits, labels, mask)
    ref = logits.log_softmax(-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1) * mask
    torch.testing.assert_close(out, ref)
    out.sum().backward()
    assert logits.grad[~mask].abs().max() == 0  # masked positions get no gradient
