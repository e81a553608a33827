"""The domain-constraint (DC) term and the per-sample consistency D_i, shaped around verl's hook points.

Paper (arXiv 2601.16419):
    eq. (3)  L_dom = D_KL(π^D_θ ‖ π_θ)       π^D_θ: the policy on T(x), teacher-forced on the response sampled for x
    eq. (4)  D_i   = D_JS(π^D_θ ‖ π_θ) ∈ [0, 1]
    eq. (7)  L_DA  = E[(1/G) Σ_i ratio_i · A_i^d − β · D_KL(π_θ ‖ π_ref) − λ · L_dom]   (paper: λ = 1)

verl's hook points and the function each calls (the recipe's worker and trainer mode only wire them):
- the engine's logits processor (full logits of a micro-batch): `token_divergence` — the per-token D(π^D ‖ π) on the
  in-scope positions (`scope_mask`, `answer_span`), or for a sequence-level D_i `sequence_consistency`'s value per
  sample; which view carries gradient: `gradient_sides`;
- the actor loss (after verl's own loss): `constraint_term` — λ · agg_loss(per-token divergence) over the scope;
- the trainer's advantage step: `sample_consistency` — D_i from the per-token values, mean over the sample's scope.

Pure torch (verl's `agg_loss`/`kl_penalty` imported lazily): tensors in, tensors out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from verl_ext.divergences import full_vocab_divergence, masked_token_mean, sampled_log_probs, sampled_token_divergence
from verl_ext.rewards import ANSWER_CLOSE, ANSWER_OPEN

LN2 = math.log(2.0)
SERIES_BELOW = 1e-3  # |log r| below which js_integrand uses its Taylor series
# domain.constraint.target -> (the original view π carries gradient, the transformed view π^D carries gradient)
TARGET_GRADIENTS = {"both": (True, True), "original": (False, True), "transformed": (True, False)}


def gradient_sides(target: str) -> tuple[bool, bool]:
    """Which views the DC gradient flows through: `(original, transformed)` for `domain.constraint.target`.

    Note:
        "both" (default): the paper writes π^D_θ with the same θ as π_θ, so both views learn. "original": π on x is
        detached, so only the transformed view is pulled toward the original (consistency regularisation's
        direction). "transformed": π^D is detached (a target), the original view moves toward it.
    """
    if target not in TARGET_GRADIENTS:
        raise ValueError(f"target must be one of {sorted(TARGET_GRADIENTS)}; got {target!r}")
    return TARGET_GRADIENTS[target]


def token_divergence(
    transformed: torch.Tensor,
    original: torch.Tensor,
    mask: torch.Tensor,
    divergence: str = "kl",
    estimator: str = "full",
    labels: torch.Tensor | None = None,
    chunk_tokens: int | None = None,
) -> torch.Tensor:
    """Per-token D(π^D ‖ π) between the views' next-token distributions; 0 off the mask (eq. (3)/(4) per token).

    Args:
        transformed: `[batch, len, vocab]` logits of the transformed view (π^D), teacher-forced on the same tokens.
        original: `[batch, len, vocab]` logits of the original view (π).
        mask: `[batch, len]` positions to compute (the in-scope response positions).
        divergence: "kl" (nats) or "js" (bits) over the full vocabulary (`estimator="full"`).
        estimator: "full", or verl's sampled-token "k1"/"k2"/"k3" estimate of the KL from the log-probs of `labels`.
        labels: `[batch, len]` the token each position predicts (needed by the sampled estimators).
        chunk_tokens: tokens per chunk of the full-vocabulary divergence (None: automatic).

    Returns:
        `[batch, len]` fp32 (fp64 for fp64 logits), differentiable w.r.t. whichever inputs require grad.

    Note:
        Full-vocabulary distributions are the default reading of the paper's token-level KL/JS; the sampled-token
        estimates are cheap proxies measured on o_t ~ π (off-distribution for π^D).
    """
    if estimator == "full":
        return full_vocab_divergence(transformed, original, mask, kind=divergence, chunk_tokens=chunk_tokens)
    if labels is None:
        raise ValueError(f"estimator={estimator!r} needs the labels (the sampled tokens each position predicts)")
    log_p = sampled_log_probs(transformed, labels, mask)  # [batch, len]
    log_q = sampled_log_probs(original, labels, mask)  # [batch, len]
    return sampled_token_divergence(log_p, log_q, mask, estimator=estimator)


def sampled_log_ratio(
    transformed: torch.Tensor, original: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """log π^D(o_t) − log π(o_t) per position `[batch, len]` (0 off the mask), without gradient.

    Args:
        transformed, original: `[batch, len, vocab]` logits of the two views.
        labels: `[batch, len]` the sampled token o_t each position predicts.
        mask: `[batch, len]` in-scope positions.
    """
    with torch.no_grad():
        return (sampled_log_probs(transformed, labels, mask) - sampled_log_probs(original, labels, mask)).float()


def constraint_term(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    weight: float,
    loss_agg_mode: str = "token-mean",
    **global_batch_info: Any,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DC term of eq. (7): λ · agg(D) over the in-scope tokens, aggregated like verl's policy loss.

    Args:
        per_token: `[batch, response_len]` D(π^D ‖ π) per response token (`token_divergence`), padded layout.
        mask: `[batch, response_len]` the in-scope response tokens (`scope_mask`).
        weight: λ ≥ 0.
        loss_agg_mode: verl's `agg_loss` mode (the actor's, or `domain.constraint.loss_agg_mode`).
        **global_batch_info: verl's `dp_size`, `batch_num_tokens`, `global_batch_size`, `loss_scale_factor`, so the
            term is normalised over the global mini-batch exactly as the policy loss is.

    Returns:
        (λ · divergence, divergence, token mean): the term to add to the loss, the aggregated divergence (scalar, the
        metric `actor/domain_loss`) and the plain mean over the in-scope tokens (detached scalar).

    Note:
        verl's token-mean divides by the mini-batch's response-token count (`batch_num_tokens`), whatever the scope:
        with `scope=answer` the sum over answer tokens is divided by all response tokens. For a mean over each
        sample's in-scope tokens set `loss_agg_mode=seq-mean-token-mean`.
    """
    from verl.trainer.ppo.core_algos import agg_loss  # lazy: verl imports Ray

    mask = mask.to(per_token.dtype)
    divergence = agg_loss(per_token, mask, loss_agg_mode, **global_batch_info)  # scalar
    token_mean = masked_token_mean(per_token.detach(), mask)  # scalar
    return weight * divergence, divergence, token_mean


@torch.no_grad()
def sample_consistency(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """D_i of eq. (4): each sample's mean per-token divergence over its in-scope tokens, in [0, 1].

    Args:
        per_token: `[batch, response_len]` the worker's divergence per response token (token level), or the sample's
            sequence-level score repeated on its in-scope tokens (`sequence_consistency`).
        mask: `[batch, response_len]` the in-scope tokens.

    Returns:
        `[batch]` fp32; 0 for a sample with no in-scope token (no view, or no well-formed answer with
        `scope=answer`: its advantage is left unshaped).

    Note:
        JS in bits is in [0, 1]; a KL (ablation, or a sampled estimate) and a sequence-level score are capped as
        min(·, 1), the project's reading (the paper does not say how it bounded KL for Table 8).
    """
    mask = mask.to(torch.float32)
    values = per_token.to(torch.float32) * mask  # [batch, len]
    return (values.sum(-1) / mask.sum(-1).clamp_min(1.0)).clamp(0.0, 1.0)


def js_integrand(log_ratio: torch.Tensor) -> torch.Tensor:
    """f(r) = ½[log₂(2/(1+r)) + r·log₂(2r/(1+r))] from l = log r, in float64, stable for any l.

    E_{o~π}[f(π^D(o)/π(o))] is the Jensen–Shannon divergence (bits) between the views' response distributions.

    Args:
        log_ratio: any shape, l = log π^D(o) − log π(o).

    Returns:
        f(e^l), same shape, float64: f(1) = 0, f(0) = ½, f grows like r/2 for large r (inf only beyond ~1e308).

    Note:
        For l ≤ 0: f = [r·log r − (1+r)·log1p(expm1(l)/2)] / (2 ln 2) (no overflow), and for |l| < 1e-3 its Taylor
        series l²/4 + l³/8 + l⁴/32 + l⁵/192 over 2 ln 2 (the closed form cancels there). For l > 0 the symmetry
        f(r) = r·f(1/r) moves the computation to −l.
    """
    l = log_ratio.to(torch.float64)  # noqa: E741
    m = -l.abs()  # ≤ 0
    r = m.exp()  # (0, 1]
    h = (torch.special.xlogy(r, r) - (1 + r) * torch.log1p(torch.expm1(m) / 2)) / (2 * LN2)  # f(e^m), in [0, ½]
    series = m**2 / 4 + m**3 / 8 + m**4 / 32 + m**5 / 192  # 2 ln2 · f(e^m) near m = 0 (no cancellation)
    h = torch.where(m > -SERIES_BELOW, series / (2 * LN2), h).clamp_min(0.0)  # clamp: rounding only
    return torch.where(l > 0, torch.exp(l + torch.log(h)), h)  # f(r) = r · f(1/r) for r > 1


@torch.no_grad()
def sequence_consistency(log_ratio: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sequence-level score per sample: f(r_i), r_i = exp(Σ_t [log π^D(o_t) − log π(o_t)]) over its in-scope tokens.

    Args:
        log_ratio: `[batch, len]` per-token log π^D(o_t) − log π(o_t) (`sampled_log_ratio`).
        mask: `[batch, len]` in-scope tokens.

    Returns:
        `[batch]` float64 f(r_i) ≥ 0, unbounded above (one sample can exceed 1; the group mean estimates a JS in
        [0, 1]). `sample_consistency` caps D_i at 1.

    Note:
        o ~ π_old (the original view), so f(r) is an unbiased one-sample estimate of the sequence-level JS; per
        sample it is capped (biased low where a sample's ratio is large) rather than averaged over the group, so
        each sample keeps its own D_i as eq. (5) writes it.
    """
    total = (log_ratio.to(torch.float64) * mask.to(torch.float64)).sum(-1)  # [batch]
    return js_integrand(total)


def answer_span(pieces: Sequence[str], open_tag: str = ANSWER_OPEN, close_tag: str = ANSWER_CLOSE) -> list[bool]:
    """Which response tokens lie inside the answer: the tokens overlapping the text between the tags.

    Args:
        pieces: the response's tokens as text, in order (their concatenation is the decoded response).
        open_tag, close_tag: the answer tags (the reward's, `verl_ext.rewards`).

    Returns:
        one bool per token; all False unless the response is well formed, i.e. it holds exactly one `open_tag` and
        one `close_tag`, in that order (the reward parser's rule, `verl_ext.rewards.extract_answer`).

    Note:
        A token that straddles a tag and the answer's text (BPE may merge them) counts as inside. A response without
        a well-formed answer has no span: it adds nothing to DC and gets D_i = 0 (its advantage unshaped) rather
        than falling back to the whole response.
    """
    text = "".join(pieces)
    if text.count(open_tag) != 1 or text.count(close_tag) != 1:
        return [False] * len(pieces)
    start = text.index(open_tag) + len(open_tag)
    end = text.index(close_tag)
    if end < start:
        return [False] * len(pieces)
    inside, offset = [], 0
    for piece in pieces:
        lo, hi = offset, offset + len(piece)
        inside.append(hi > start and lo < end)  # the token's characters overlap [start, end)
        offset = hi
    return inside
