"""The domain-constraint (DC) loss term and the per-sample consistency D_i, from the two views' outputs.

Paper (arXiv 2601.16419):
    eq. (3)  L_dom = D_KL(π^D_θ ‖ π_θ)       π^D_θ: the policy on T(x), teacher-forced on the response sampled for x
    eq. (4)  D_i   = D_JS(π^D_θ ‖ π_θ) ∈ [0, 1]
    eq. (7)  L_DA  = E[(1/G) Σ_i ratio_i · A_i^d − β · D_KL(π_θ ‖ π_ref) − λ · L_dom]   (paper: λ = 1)

These functions only compute; the recipe's worker wires them into verl's actor loss and old-log-prob pass.
"""

from __future__ import annotations

from typing import Any

import torch

from verl_ext.config import DomainConstraintConfig, DomainShapingConfig
from verl_ext.divergences import (
    full_vocab_divergence,
    masked_token_mean,
    per_sample_mean,
    sampled_token_divergence,
)


def _per_token(
    orig: torch.Tensor, trans: torch.Tensor, mask: torch.Tensor, divergence: str, estimator: str, chunk: int | None
) -> torch.Tensor:
    """D(trans ‖ orig) per token `[batch, response_len]`: logits `[b, L, V]` ("full") or sampled log-probs `[b, L]`."""
    if estimator == "full":
        return full_vocab_divergence(trans, orig, mask, kind=divergence, chunk_tokens=chunk)
    return sampled_token_divergence(trans, orig, mask, estimator=estimator)


def domain_constraint_loss(
    orig: torch.Tensor,
    trans: torch.Tensor,
    response_mask: torch.Tensor,
    config: DomainConstraintConfig,
    loss_agg_mode: str = "token-mean",
    **global_batch_info: Any,
) -> tuple[torch.Tensor, dict[str, float]]:
    """DC term λ · D(π^D_θ ‖ π_θ), eq. (3), aggregated like verl's policy loss; add it to the actor loss.

    Args:
        orig: original view: `[batch, response_len, vocab]` logits (estimator "full") or `[batch, response_len]`
            log-probs of the sampled tokens (estimator "k1"/"k3").
        trans: transformed view, same shape and same response tokens (teacher-forced).
        response_mask: `[batch, response_len]`.
        config: `domain.constraint`; its `loss_agg_mode` (if set) overrides the argument.
        loss_agg_mode: the actor's aggregation (verl's `agg_loss` modes).
        **global_batch_info: verl's `dp_size`, `batch_num_tokens`, `global_batch_size`, ... passed to `agg_loss`, so
            the term is normalised over the global mini-batch exactly as the policy loss is.

    Returns:
        (loss, metrics): the weighted scalar loss (0 when disabled) and
        `{"actor/domain_loss": unweighted aggregated divergence, "actor/domain_divergence_token_mean": ...}`.

    Note:
        `detach_transformed` stops the gradient through π^D (a target); by default both views carry gradient, since
        the paper writes π^D_θ with the same θ. The weight defaults to 1 (the paper's L_DA has no coefficient).
    """
    from verl.trainer.ppo.core_algos import agg_loss  # lazy: verl imports Ray

    if not config.active:
        return orig.new_zeros(()), {}
    if config.detach_transformed:
        trans = trans.detach()
    per_token = _per_token(orig, trans, response_mask, config.divergence, config.estimator, config.chunk_tokens)
    mode = config.loss_agg_mode or loss_agg_mode
    divergence = agg_loss(per_token, response_mask, mode, **global_batch_info)  # scalar
    metrics = {
        "actor/domain_loss": divergence.detach().item(),
        "actor/domain_divergence_token_mean": masked_token_mean(per_token.detach(), response_mask).item(),
    }
    return config.weight * divergence, metrics


@torch.no_grad()
def domain_consistency(
    orig: torch.Tensor,
    trans: torch.Tensor,
    response_mask: torch.Tensor,
    config: DomainShapingConfig,
    chunk_tokens: int | None = None,
) -> torch.Tensor:
    """D_i of eq. (4): each sample's mean per-token divergence between the views, in [0, 1], without gradient.

    Args:
        orig: original view, `[batch, response_len, vocab]` logits ("full") or `[batch, response_len]` log-probs.
        trans: transformed view, same shape, same response tokens.
        response_mask: `[batch, response_len]`.
        config: `domain.shaping` (divergence and estimator).
        chunk_tokens: chunk size of the full-vocabulary divergence (None: automatic).

    Returns:
        `[batch]` D_i ∈ [0, 1] (fp32); 0 for a sample with no response token.

    Note:
        JS in bits is already in [0, 1]. A KL (ablation, or a sampled estimate) is mapped as min(KL, 1), the
        project's reading; the paper does not say how it bounded KL for Table 8. D_i is the mean over the sample's
        response tokens (token level, full vocabulary) — the paper does not say token- or sequence-level.
    """
    per_token = _per_token(orig, trans, response_mask, config.divergence, config.estimator, chunk_tokens)
    per_sample = per_sample_mean(per_token.float(), response_mask)  # [batch]
    return per_sample.clamp(0.0, 1.0)
