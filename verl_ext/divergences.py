"""Per-token divergences between two full-vocabulary next-token distributions, chunked over tokens.

Domain-Aware GRPO (arXiv 2601.16419) compares π^D_θ(·|T(x), q, o_<t) — the policy on the transformed image — with
π_θ(·|x, q, o_<t), teacher-forced on the same response o:
    eq. (3)  L_dom = D_KL(π^D_θ ‖ π_θ)
    eq. (4)  D_i   = D_JS(π^D_θ ‖ π_θ) ∈ [0, 1]   (log base 2)

Memory: a naive fp32 computation over logits `[batch, response_len, vocab]` holds several fp32 copies of the whole
tensor (the upcast, both log-softmaxes, probabilities, products): tens of GB at Qwen2.5-VL's vocabulary of 151,936.
Here the valid (unmasked) tokens are processed `chunk_tokens` at a time, so the extra memory is a few
`chunk_tokens × vocab` fp32 buffers whatever the batch. Gradients come from a custom autograd function that recomputes
each chunk in the backward pass with the closed-form gradients below, instead of keeping every intermediate alive:
    ∂KL(p‖q)/∂a = p ⊙ (log p − log q − KL)          ∂KL(p‖q)/∂b = q − p
    ∂JS/∂a = ½ p ⊙ (log p − log m − KL(p‖m)) / ln 2  (and symmetrically for b),  m = ½(p + q)
where p = softmax(a), q = softmax(b). The forward values are sums of non-negative per-token terms in a
log1p/expm1 form, accurate for near-identical views (see `_chunk_forward`). Pure torch: importing this module
imports neither verl nor Ray.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch

Divergence = Literal["kl", "js"]
LN2 = math.log(2.0)
# fp32 elements per chunk buffer (128 MiB): about 220 tokens at vocab 151,936.
DEFAULT_CHUNK_ELEMENTS = 1 << 25


def default_chunk_tokens(vocab_size: int, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> int:
    """Tokens per chunk so that one fp32 `[chunk, vocab]` buffer holds about `chunk_elements` values."""
    return max(1, chunk_elements // max(1, vocab_size))


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for half-precision logits, the input's own dtype for fp32/fp64."""
    return torch.promote_types(dtype, torch.float32)


def _zero_where_nan_(x: torch.Tensor) -> torch.Tensor:
    """0 · (±inf) terms are exactly the tokens of zero probability, whose contribution is 0: set them to 0 in place."""
    return torch.nan_to_num_(x, nan=0.0, posinf=math.inf, neginf=-math.inf)


def _masked_row_sum(products: torch.Tensor) -> torch.Tensor:
    """Row sums of `products` `[c, V]`, where a NaN term (0 · ±inf: a zero-probability token) counts as 0.

    Only rows whose plain sum is NaN (rows with -inf logits) pay for the masked second pass.
    """
    out = products.sum(-1)  # [c]
    bad = torch.isnan(out)
    if bad.any():
        out[bad] = _zero_where_nan_(products[bad]).sum(-1)
    return out


def _chunk_forward(a: torch.Tensor, b: torch.Tensor, kinds: tuple[Divergence, ...]) -> list[torch.Tensor]:
    """Divergences per row of two logits chunks `[c, V]` -> one `[c]` per kind; KL in nats, JS in bits.

    Both are sums of non-negative per-token terms computed without cancelling first-order terms (log1p/expm1). The
    plain Σ p (a − b) − (lse(a) − lse(b)) has an fp32 floor of ~1e-6 nats, negative values included (each lse carries
    a rounding error of ~1e-7 · |lse|); measured on views whose fp32 logits differ by 1e-2 .. 1e-4 (vocab 4,096), this
    form is within 2e-10 .. 4e-12 nats of float64 for KL and 1e-11 .. 2e-15 bits for JS (plain JS: ~5e-8 bits):
        r = (b − a) − (lse(b) − lse(a)) ≈ log q − log p     e = p · expm1(r) ≈ q − p     s = Σ e ≈ 0
        KL(p‖q) = Σ p (e^r − 1 − r) − (s − log1p(s))         (exact for any r that is off by a constant per row,
                                                              so the lse rounding enters at second order only)
        JS      = ½ Σ [(q − p) δ/2 − (p + q) log cosh(δ/2)] / ln 2,   δ = r − log1p(s) = log q − log p
    with log cosh(u) = log1p(w² / (2 (1 + w))), w = expm1(|u|). Tokens where these are not finite (a zero probability
    on one side, |δ| beyond exp's range) fall back to the direct forms q − p and p log(2p/(p+q)) + q log(2q/(p+q)).
    """
    x, y = a.to(_compute_dtype(a.dtype)), b.to(_compute_dtype(b.dtype))  # [c, V]
    lse_x, lse_y = torch.logsumexp(x, -1, keepdim=True), torch.logsumexp(y, -1, keepdim=True)  # [c, 1]
    nan_rows = (torch.isnan(lse_x) | torch.isnan(lse_y)).squeeze(-1)  # a NaN logit makes its whole row NaN
    p = (x - lse_x).exp_()  # [c, V]
    r = (y - x).sub_(lse_y - lse_x)  # [c, V]   log q − log p, up to a rounding error constant per row
    del x
    q_minus_p = torch.expm1(r).mul_(p)  # [c, V]
    bad = ~torch.isfinite(q_minus_p)  # [c, V]   p = 0, or r beyond exp's range: q − p directly
    if bad.any():
        rows, cols = bad.nonzero(as_tuple=True)  # [k] each
        q_minus_p[rows, cols] = (y[rows, cols] - lse_y[rows, 0]).exp() - p[rows, cols]
    del y, bad
    s = q_minus_p.sum(-1, keepdim=True)  # [c, 1]   Σ q − Σ p: 0 up to rounding
    log1p_s = torch.log1p(s)  # [c, 1]
    outs = {}
    if "kl" in kinds:
        terms = torch.addcmul(q_minus_p, p, r, value=-1.0)  # [c, V]   p (e^r − 1 − r) ≥ 0; +inf where q = 0 < p
        first = terms.sum(-1)  # [c]
        bad = torch.isnan(first)
        if bad.any():  # p = 0 (r = ±inf or NaN) makes the term NaN; it is q − p = q
            first[bad] = torch.where(torch.isnan(terms[bad]), q_minus_p[bad], terms[bad]).sum(-1)
        del terms
        outs["kl"] = torch.where(torch.isinf(first), first, first - (s - log1p_s).squeeze(-1)).clamp_(min=0.0)
    if "js" in kinds:  # in place from here on: q − p of the normalised q, and δ = log q − log p
        q_minus_p.addcmul_(p, s, value=-1.0).div_(1.0 + s)
        outs["js"] = _js_from_ratio(p, q_minus_p, r.sub_(log1p_s))
    return [torch.where(nan_rows, torch.full_like(outs[kind], math.nan), outs[kind]) for kind in kinds]


def _fix_not_finite_(values: torch.Tensor, direct: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Replace the non-finite entries of `values` `[c, V]` in place by `direct(rows, cols)` at those entries."""
    bad = ~torch.isfinite(values)  # [c, V]
    if bad.any():
        rows, cols = bad.nonzero(as_tuple=True)  # [k] each
        values[rows, cols] = direct(rows, cols)


def _js_from_ratio(p: torch.Tensor, q_minus_p: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """JS in bits per row from p `[c, V]`, q − p `[c, V]` and δ = log q − log p `[c, V]` (overwritten).

    2 · JS integrand (nats) = (q − p) u − (p + q) log cosh u = (q − p)(u − log cosh u) − 2p log cosh u,  u = δ/2.
    """
    half = delta.mul_(0.5)  # [c, V]   u
    w = half.abs().expm1_()  # [c, V]   ≥ 0: log cosh is even, and 1 + w does not cancel
    log_cosh = w.square()  # [c, V]
    log_cosh.div_(w.add_(1.0).mul_(2.0)).log1p_()
    del w
    terms = half.sub_(log_cosh).mul_(q_minus_p).addcmul_(p, log_cosh, value=-2.0)  # [c, V]

    def direct(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        p_k = p[rows, cols]  # [k]
        q_k = p_k + q_minus_p[rows, cols]  # [k]
        m_k = 0.5 * (p_k + q_k)  # [k]
        return torch.xlogy(p_k, p_k / m_k).nan_to_num_(nan=0.0) + torch.xlogy(q_k, q_k / m_k).nan_to_num_(nan=0.0)

    _fix_not_finite_(terms, direct)
    return terms.sum(-1).mul_(0.5 / LN2).clamp_(0.0, 1.0)  # [c]; the clamp only removes rounding


def _chunk_backward(
    a: torch.Tensor, b: torch.Tensor, kind: Divergence, need_a: bool, need_b: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Gradients of the per-row divergence w.r.t. the two logits chunks `[c, V]` (fp32, unscaled)."""
    log_p = torch.log_softmax(a.to(_compute_dtype(a.dtype)), dim=-1)  # [c, V]
    log_q = torch.log_softmax(b.to(_compute_dtype(b.dtype)), dim=-1)  # [c, V]
    p, q = log_p.exp(), log_q.exp()  # [c, V]
    grad_a = grad_b = None
    if kind == "kl":
        if need_a:
            diff = _zero_where_nan_(log_p - log_q)  # [c, V]
            kl = _zero_where_nan_(p * diff).sum(-1, keepdim=True)  # [c, 1]
            grad_a = _zero_where_nan_(p * (diff - kl))
        if need_b:
            grad_b = q - p
        return grad_a, grad_b
    log_m = torch.logaddexp(log_p, log_q) - LN2  # [c, V]
    for need, x, log_x, side in ((need_a, p, log_p, "a"), (need_b, q, log_q, "b")):
        if not need:
            continue
        diff = _zero_where_nan_(log_x - log_m)  # [c, V]
        kl_xm = _zero_where_nan_(x * diff).sum(-1, keepdim=True)  # [c, 1]
        grad = _zero_where_nan_(x * (diff - kl_xm)).mul_(0.5 / LN2)
        if side == "a":
            grad_a = grad
        else:
            grad_b = grad
    return grad_a, grad_b


class _ChunkedDivergence(torch.autograd.Function):
    """Autograd function: per-token divergence `[N]` over the rows of two `[N, V]` logits, chunked."""

    @staticmethod
    def forward(ctx, logits_p, logits_q, rows, kind, chunk_tokens):  # noqa: D102
        dtype = _compute_dtype(logits_p.dtype)
        out = torch.zeros(logits_p.shape[0], dtype=dtype, device=logits_p.device)  # [N]
        for start in range(0, rows.numel(), chunk_tokens):
            idx = rows[start : start + chunk_tokens]  # [c]
            out[idx] = _chunk_forward(logits_p.index_select(0, idx), logits_q.index_select(0, idx), (kind,))[0]
        ctx.save_for_backward(logits_p, logits_q, rows)
        ctx.kind, ctx.chunk_tokens = kind, chunk_tokens
        return out

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102
        logits_p, logits_q, rows = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_p = torch.zeros_like(logits_p) if need_a else None  # [N, V]
        grad_q = torch.zeros_like(logits_q) if need_b else None  # [N, V]
        for start in range(0, rows.numel(), ctx.chunk_tokens):
            idx = rows[start : start + ctx.chunk_tokens]  # [c]
            g_a, g_b = _chunk_backward(
                logits_p.index_select(0, idx), logits_q.index_select(0, idx), ctx.kind, need_a, need_b
            )
            scale = grad_out.index_select(0, idx).unsqueeze(-1)  # [c, 1]
            if g_a is not None:
                grad_p.index_copy_(0, idx, (g_a * scale).to(grad_p.dtype))
            if g_b is not None:
                grad_q.index_copy_(0, idx, (g_b * scale).to(grad_q.dtype))
        return grad_p, grad_q, None, None, None


def full_vocab_divergence(
    logits_p: torch.Tensor,
    logits_q: torch.Tensor,
    response_mask: torch.Tensor,
    kind: Divergence = "kl",
    chunk_tokens: int | None = None,
) -> torch.Tensor:
    """Per-token divergence D(p ‖ q) between the full next-token distributions of two logits tensors.

    Paper: eq. (3) (KL, for the domain constraint) and eq. (4) (JS, for the domain consistency D_i), with
    p = π^D_θ (transformed view) and q = π_θ (original view).

    Args:
        logits_p: `[batch, response_len, vocab]` logits of p (bf16/fp16 are computed in fp32, fp64 in fp64).
        logits_q: `[batch, response_len, vocab]` logits of q, same shape.
        response_mask: `[batch, response_len]`, 1/True for response tokens; other positions give 0 and no gradient.
        kind: "kl" for KL(p‖q) in nats, "js" for Jensen–Shannon in bits (log base 2, so in [0, 1]).
        chunk_tokens: valid tokens per chunk; None chooses about 2^25 fp32 elements per buffer.

    Returns:
        `[batch, response_len]` divergence per token (fp32, or fp64 for fp64 logits), differentiable w.r.t. both.

    Note:
        -inf logits are zero-probability tokens and contribute 0. KL(p‖q) is +inf where q gives zero probability to a
        token p can emit (its gradient is then not finite); JS is always finite. A NaN logit makes its token NaN,
        never a silent 0. Full-vocabulary (not sampled-token) divergences are the project's default reading of the
        paper's token-level KL/JS; see `sampled_token_divergence` for the cheap estimate.
    """
    _check_inputs(logits_p, logits_q, response_mask, (kind,))
    batch, length, vocab = logits_p.shape
    chunk = chunk_tokens or default_chunk_tokens(vocab)
    rows = response_mask.reshape(-1).nonzero().squeeze(-1)  # [n_valid]
    flat = _ChunkedDivergence.apply(
        logits_p.reshape(batch * length, vocab), logits_q.reshape(batch * length, vocab), rows, kind, chunk
    )  # [batch * length]
    return flat.view(batch, length)


@torch.no_grad()
def full_vocab_divergences(
    logits_p: torch.Tensor,
    logits_q: torch.Tensor,
    response_mask: torch.Tensor,
    kinds: tuple[Divergence, ...] = ("kl", "js"),
    chunk_tokens: int | None = None,
) -> dict[str, torch.Tensor]:
    """Several divergences at once, without gradient, in one chunked pass (shared log-softmaxes).

    Same arguments and conventions as `full_vocab_divergence`; returns `{kind: [batch, response_len]}`. Used where
    no gradient is needed: D_i before the advantage, and metrics.
    """
    _check_inputs(logits_p, logits_q, response_mask, kinds)
    batch, length, vocab = logits_p.shape
    chunk = chunk_tokens or default_chunk_tokens(vocab)
    flat_p, flat_q = logits_p.reshape(batch * length, vocab), logits_q.reshape(batch * length, vocab)
    rows = response_mask.reshape(-1).nonzero().squeeze(-1)  # [n_valid]
    dtype = _compute_dtype(logits_p.dtype)
    outs = {kind: torch.zeros(batch * length, dtype=dtype, device=logits_p.device) for kind in kinds}
    for start in range(0, rows.numel(), chunk):
        idx = rows[start : start + chunk]  # [c]
        for kind, values in zip(kinds, _chunk_forward(flat_p.index_select(0, idx), flat_q.index_select(0, idx), kinds)):
            outs[kind][idx] = values
    return {kind: out.view(batch, length) for kind, out in outs.items()}


def _check_inputs(
    logits_p: torch.Tensor, logits_q: torch.Tensor, response_mask: torch.Tensor, kinds: tuple[str, ...]
) -> None:
    if logits_p.shape != logits_q.shape or logits_p.dim() != 3:
        raise ValueError(f"logits must both be [batch, response_len, vocab]; got {logits_p.shape} and {logits_q.shape}")
    if response_mask.shape != logits_p.shape[:2]:
        raise ValueError(f"response_mask must be {tuple(logits_p.shape[:2])}; got {tuple(response_mask.shape)}")
    if not kinds or any(kind not in ("kl", "js") for kind in kinds):
        raise ValueError(f"kind must be 'kl' or 'js'; got {kinds!r}")


def sampled_token_divergence(
    log_prob_p: torch.Tensor, log_prob_q: torch.Tensor, response_mask: torch.Tensor, estimator: str = "k3"
) -> torch.Tensor:
    """Cheap per-token estimate of KL(p‖q) from the log-probs of the sampled tokens only (verl's `kl_penalty`).

    Args:
        log_prob_p: `[batch, response_len]` log p(o_t) of the sampled tokens under p (the transformed view).
        log_prob_q: `[batch, response_len]` log q(o_t) under q (the original view).
        response_mask: `[batch, response_len]`; masked positions are set to 0.
        estimator: verl's names: "k1"/"kl" (log p − log q), "k2"/"mse", "k3"/"low_var_kl" (clamped to [-10, 10]).

    Returns:
        `[batch, response_len]` estimate per token.

    Note:
        The sample o_t comes from π_old on the ORIGINAL view, not from p, so these are off-distribution estimates of
        KL(p‖q): cheap (no full logits) but biased. Offered as an option, not the default.
    """
    from verl.trainer.ppo.core_algos import kl_penalty  # lazy: verl imports Ray

    return kl_penalty(log_prob_p, log_prob_q, estimator) * response_mask.to(log_prob_p.dtype)


def sampled_log_probs(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[label] at the masked positions (0 elsewhere), without a full-size log-softmax.

    Args:
        logits: `[batch, len, vocab]`.
        labels: `[batch, len]` token ids whose log-probability is wanted.
        mask: `[batch, len]`; only these positions are computed (one `[n_masked, vocab]` buffer).

    Returns:
        `[batch, len]` in the logits' compute dtype (fp32 for half precision), differentiable.
    """
    rows = mask.reshape(-1).nonzero().squeeze(-1)  # [n]
    flat = logits.reshape(-1, logits.shape[-1]).index_select(0, rows)  # [n, V]
    flat = flat.to(_compute_dtype(flat.dtype))
    picked = flat.gather(-1, labels.reshape(-1).index_select(0, rows).unsqueeze(-1)).squeeze(-1)  # [n]
    values = picked - torch.logsumexp(flat, dim=-1)  # [n]
    out = torch.zeros(mask.numel(), dtype=values.dtype, device=values.device)
    return out.index_put((rows,), values).view(mask.shape)


def masked_token_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` `[batch, len]` over the tokens where `mask` is set (scalar; 0 when no token is set)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def per_sample_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` `[batch, len]` over each sample's masked tokens -> `[batch]` (0 for a fully masked row)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)
