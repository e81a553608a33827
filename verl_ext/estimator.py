"""The `domain_grpo` advantage estimator: GRPO's group-relative advantage scaled by each sample's consistency.

Paper (arXiv 2601.16419):
    eq. (1)  A_i   = (r_i − mean_j r_j) / std_j r_j
    eq. (5)  A_i^d = (1 − D_i) · A_i,    D_i = D_JS(π^D_θ ‖ π_θ) ∈ [0, 1] for sample i

How D_i reaches the estimator. verl's `compute_advantage` calls a registered estimator with a fixed set of inputs
(`token_level_rewards, response_mask, config, index`), and no per-sample extra. verl's own GDPO needed a branch there;
an upstream PR would add one (`domain_consistency=data.batch["domain_consistency"]`). Without editing verl, the
recipe's trainer mode fetches the field from TransferQueue and opens `domain_advantage_inputs(consistency=...)` around
its call to verl's unchanged `_compute_advantage`; the estimator takes the explicit keyword first, then that context.
Called with neither, it raises: `domain_grpo` never silently degrades to GRPO.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class DomainAdvantageInputs:
    """Per-batch inputs of `domain_grpo` beyond verl's fixed estimator arguments.

    Attributes:
        consistency: `[batch]` D_i ∈ [0, 1] in the batch's row order, or None when reward shaping is off
            (then `domain_grpo` returns GRPO's advantages unchanged).
        stats: filled by the estimator: `advantage_abs_change_max`, max |A_i^d − A_i| over the batch (0.0 exactly when
            the result is GRPO's), for the trainer's metrics.
    """

    consistency: torch.Tensor | None
    stats: dict[str, float] = field(default_factory=dict)


_INPUTS: contextvars.ContextVar[DomainAdvantageInputs | None] = contextvars.ContextVar("domain_inputs", default=None)


@contextlib.contextmanager
def domain_advantage_inputs(consistency: torch.Tensor | None) -> Iterator[DomainAdvantageInputs]:
    """Make `consistency` (`[batch]` D_i, or None for no shaping) visible to `domain_grpo` calls inside the block."""
    token = _INPUTS.set(DomainAdvantageInputs(consistency=consistency))
    try:
        yield _INPUTS.get()
    finally:
        _INPUTS.reset(token)


def consistency_weights(consistency: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Check D_i and return the advantage weights 1 − D_i, `[batch]` (raises on NaN, out of [0, 1], wrong length)."""
    d = consistency.detach().reshape(-1)
    if d.numel() != batch_size:
        raise ValueError(f"domain_consistency has {d.numel()} values for a batch of {batch_size} samples")
    if not torch.isfinite(d).all() or d.min() < 0 or d.max() > 1:
        raise ValueError(
            f"domain_consistency must be finite and in [0, 1] (got min {d.min().item()}, max {d.max().item()}); "
            "KL-based consistency must be mapped with min(KL, 1) first"
        )
    return 1.0 - d


def compute_domain_grpo_outcome_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray,
    epsilon: float = 1e-6,
    norm_adv_by_std_in_grpo: bool | None = None,
    config: Any = None,
    domain_consistency: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Domain-Aware GRPO advantages, eq. (5): verl's GRPO advantage of each sample times (1 − D_i).

    Args:
        token_level_rewards: `[batch, response_len]` rewards (outcome reward summed per sample).
        response_mask: `[batch, response_len]`.
        index: `[batch]` group ids (verl's `uid`): samples of one prompt share one.
        epsilon: added to the group std, as in verl's `grpo`.
        norm_adv_by_std_in_grpo: divide by the group std (GRPO) or not (Dr.GRPO); None reads
            `config.norm_adv_by_std_in_grpo` (verl passes non-builtin estimators only `config`), default True.
        config: verl's `algorithm` config.
        domain_consistency: `[batch]` D_i ∈ [0, 1]; None reads it from `domain_advantage_inputs`.

    Returns:
        (advantages, returns), each `[batch, response_len]`, as every verl estimator.

    Note:
        The sign of A_i is kept: a consistent sample (D_i ≈ 0) with a negative advantage is pushed down at full
        strength, as eq. (5) reads. With D ≡ 0 (or shaping off) the result is verl's `grpo` bit for bit.
    """
    from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage  # lazy: verl imports Ray

    inputs = _INPUTS.get()
    if domain_consistency is None:
        if inputs is None:
            raise RuntimeError(
                "algorithm.adv_estimator=domain_grpo needs each sample's domain consistency D_i, which the "
                "domain_grpo trainer mode provides: launch through recipe/domain_grpo (trainer.v1.trainer_mode="
                "domain_grpo), or wrap the call in verl_ext.estimator.domain_advantage_inputs(...)"
            )
        domain_consistency = inputs.consistency
    if norm_adv_by_std_in_grpo is None:
        norm_adv_by_std_in_grpo = True if config is None else bool(config.get("norm_adv_by_std_in_grpo", True))
    advantages, returns = compute_grpo_outcome_advantage(
        token_level_rewards=token_level_rewards,
        response_mask=response_mask,
        index=index,
        epsilon=epsilon,
        norm_adv_by_std_in_grpo=norm_adv_by_std_in_grpo,
        config=config,
    )  # [batch, response_len] each; GRPO returns the same tensor twice
    if domain_consistency is None:
        shaped = advantages
    else:
        weights = consistency_weights(domain_consistency, advantages.shape[0]).to(advantages)  # [batch]
        shaped = advantages * weights.unsqueeze(-1)  # [batch, response_len]
    if inputs is not None:
        inputs.stats["advantage_abs_change_max"] = (shaped - advantages).abs().max().item() if shaped.numel() else 0.0
    return shaped, shaped if domain_consistency is not None else returns
