"""The `domain_grpo` advantage estimator: a base estimator's advantage scaled by each sample's consistency.

Paper (arXiv 2601.16419):
    eq. (1)  A_i   = (r_i − mean_j r_j) / std_j r_j          (GRPO, the paper's base; any verl outcome estimator here)
    eq. (5)  A_i^d = (1 − D_i) · A_i,    D_i = D_JS(π^D_θ ‖ π_θ) ∈ [0, 1] for sample i

How D_i reaches the estimator depends on the verl it runs on (`verl_has_domain_grpo`, exactly one path at run time):
- stock verl 0.9.1: `compute_advantage` calls a registered estimator with a fixed set of inputs
  (`token_level_rewards, response_mask, config, index`) and no per-sample extra. The recipe's trainer mode opens
  `domain_advantage_inputs(consistency=..., base_estimator=...)` around verl's unchanged `_compute_advantage`; this
  module's estimator (registered by `verl_ext.registry`) takes the explicit keyword first, then that context.
- verl with `upstream/verl-0.9.1-domain_grpo.patch`: verl registers its own `domain_grpo` and hands it `data.batch`
  (with the field `domain_consistency`) in `compute_advantage`; this module's estimator is then not registered.
- verl with PR #7473 (open upstream): `compute_advantage` hands `batch` and `non_tensor_batch` to every registered
  estimator that declares them. This estimator declares both and reads the per-sample field `domain_consistency`
  there: on such a verl the estimator needs no context, only a batch that carries the field.
Where D_i is looked up, first found wins: the `domain_consistency` keyword, `batch["domain_consistency"]`,
`non_tensor_batch["domain_consistency"]`, the `domain_advantage_inputs` context. With none of them the estimator
raises: `domain_grpo` never silently degrades to GRPO.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np
import torch

from verl_ext.config import INVALID_BASE_ESTIMATORS


@dataclass(frozen=True)
class DomainAdvantageInputs:
    """Per-batch inputs of `domain_grpo` beyond verl's fixed estimator arguments.

    Attributes:
        consistency: `[batch]` D_i ∈ [0, 1] in the batch's row order, or None when reward shaping is off
            (then `domain_grpo` returns the base estimator's advantages unchanged).
        base_estimator: the verl estimator whose advantages are shaped (`domain.shaping.base_estimator`).
        stats: filled by the estimator: `advantage_abs_change_max`, max |A_i^d − A_i| over the batch (0.0 exactly when
            the result is the base estimator's), for the trainer's metrics.
    """

    consistency: torch.Tensor | None
    base_estimator: str = "grpo"
    stats: dict[str, float] = field(default_factory=dict)


CONSISTENCY_FIELD = "domain_consistency"  # the per-sample field D_i is read from (batch / non_tensor_batch)
PER_SAMPLE_FIELD_ARGS = ("batch", "non_tensor_batch")  # what verl PR #7473 hands an estimator declaring them
_INPUTS: contextvars.ContextVar[DomainAdvantageInputs | None] = contextvars.ContextVar("domain_inputs", default=None)


@contextlib.contextmanager
def domain_advantage_inputs(
    consistency: torch.Tensor | None, base_estimator: str = "grpo"
) -> Iterator[DomainAdvantageInputs]:
    """Make `consistency` (`[batch]` D_i, or None for no shaping) and the base estimator visible to `domain_grpo`."""
    token = _INPUTS.set(DomainAdvantageInputs(consistency=consistency, base_estimator=base_estimator))
    try:
        yield _INPUTS.get()
    finally:
        _INPUTS.reset(token)


def verl_has_domain_grpo(core_algos: ModuleType | None = None) -> bool:
    """True when verl's own `core_algos` carries `domain_grpo` (verl patched with `upstream/`), False on stock 0.9.1."""
    if core_algos is None:
        from verl.trainer.ppo import core_algos  # lazy: verl imports Ray
    return "DOMAIN_GRPO" in core_algos.AdvantageEstimator.__members__


def check_base_estimator(name: str) -> None:
    """Raise ValueError naming `domain.shaping.base_estimator` unless verl can run `name` as DR's base."""
    from verl.trainer.ppo import core_algos

    if name in INVALID_BASE_ESTIMATORS:
        raise ValueError(f"domain.shaping.base_estimator={name!r} cannot be shaped by domain_grpo")
    if name not in core_algos.ADV_ESTIMATOR_REGISTRY:
        known = sorted(set(core_algos.ADV_ESTIMATOR_REGISTRY) - set(INVALID_BASE_ESTIMATORS))
        raise ValueError(f"domain.shaping.base_estimator={name!r} is not a registered verl estimator; one of {known}")


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


def base_advantages(
    base_estimator: str,
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray | None,
    epsilon: float,
    norm_adv_by_std_in_grpo: bool,
    config: Any,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The base estimator's (advantages, returns), each `[batch, response_len]`, called as compute_advantage would.

    Note:
        `grpo` gets `norm_adv_by_std_in_grpo` (compute_advantage's GRPO branch); every other estimator gets what
        compute_advantage hands a registered estimator (`token_level_rewards, response_mask, config, index` and the
        optional extras in `kwargs`, e.g. `reward_baselines` for REMAX), so D ≡ 0 gives verl's result bit for bit.
    """
    from verl.trainer.ppo import core_algos  # lazy: verl imports Ray

    check_base_estimator(base_estimator)
    if base_estimator == "grpo":
        return core_algos.compute_grpo_outcome_advantage(
            token_level_rewards=token_level_rewards,
            response_mask=response_mask,
            index=index,
            epsilon=epsilon,
            norm_adv_by_std_in_grpo=norm_adv_by_std_in_grpo,
        )
    base_kwargs = {"token_level_rewards": token_level_rewards, "response_mask": response_mask, "config": config}
    if index is not None:
        base_kwargs["index"] = index
    base_fn = core_algos.get_adv_estimator_fn(base_estimator)
    for name in PER_SAMPLE_FIELD_ARGS:  # handed on only where the base can take them, as PR #7473 hands them
        if kwargs.get(name) is None or not accepts_keyword(base_fn, name):
            kwargs.pop(name, None)
    return base_fn(**base_kwargs, **kwargs)


def accepts_keyword(fn: Any, name: str) -> bool:
    """Whether `fn` can be called with the keyword argument `name` (declared, or through `**kwargs`)."""
    parameters = inspect.signature(fn).parameters.values()
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def consistency_from_fields(batch: Any = None, non_tensor_batch: dict[str, Any] | None = None) -> torch.Tensor | None:
    """D_i `[batch]` from the per-sample field `domain_consistency` of `batch` (tensors), else of `non_tensor_batch`
    (numpy, e.g. an agent loop's `extra_fields`), else None."""
    if batch is not None and CONSISTENCY_FIELD in batch.keys():
        return batch[CONSISTENCY_FIELD]
    if non_tensor_batch is not None and CONSISTENCY_FIELD in non_tensor_batch:
        return torch.as_tensor(np.asarray(non_tensor_batch[CONSISTENCY_FIELD], dtype=np.float32))  # [batch]
    return None


def compute_domain_grpo_outcome_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray | None = None,
    epsilon: float = 1e-6,
    norm_adv_by_std_in_grpo: bool | None = None,
    config: Any = None,
    domain_consistency: torch.Tensor | None = None,
    base_estimator: str | None = None,
    batch: Any = None,
    non_tensor_batch: dict[str, Any] | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Domain-Aware GRPO advantages, eq. (5): the base estimator's advantage of each sample times (1 − D_i).

    Args:
        token_level_rewards: `[batch, response_len]` rewards (outcome reward summed per sample).
        response_mask: `[batch, response_len]`.
        index: `[batch]` group ids (verl's `uid`): samples of one prompt share one.
        epsilon: added to the group std, as in verl's `grpo` (GRPO base only).
        norm_adv_by_std_in_grpo: divide by the group std (GRPO) or not (Dr.GRPO); None reads
            `config.norm_adv_by_std_in_grpo` (verl passes non-builtin estimators only `config`), default True.
        config: verl's `algorithm` config.
        domain_consistency: `[batch]` D_i ∈ [0, 1]; None reads the field `domain_consistency` of `batch`, then of
            `non_tensor_batch`, then `domain_advantage_inputs`.
        base_estimator: the verl estimator whose advantages are shaped; None reads it from `domain_advantage_inputs`,
            default "grpo".
        batch: verl's `data.batch` (TensorDict, `[batch]` leading dim), as verl PR #7473's compute_advantage hands it
            to an estimator that declares it; handed on to a base estimator that accepts it.
        non_tensor_batch: verl's `data.non_tensor_batch` (`{name: [batch] numpy array}`), likewise.
        **kwargs: further inputs verl's compute_advantage hands a registered estimator (e.g. `reward_baselines`),
            passed on to the base estimator.

    Returns:
        (advantages, returns), each `[batch, response_len]`, as every verl estimator.

    Note:
        The sign of A_i is kept: a consistent sample (D_i ≈ 0) with a negative advantage is pushed down at full
        strength, as eq. (5) reads. With D ≡ 0 (or shaping off) the result is the base estimator's bit for bit.
        Returns are shaped too when the base returns its advantages as returns (grpo, rloo, ...); a base with its
        own returns (reinforce_plus_plus, remax: reward sums for a critic) keeps them.
    """
    inputs = _INPUTS.get()
    if domain_consistency is None:
        domain_consistency = consistency_from_fields(batch, non_tensor_batch)
    if domain_consistency is None:
        if inputs is None:
            raise RuntimeError(
                "algorithm.adv_estimator=domain_grpo needs each sample's domain consistency D_i, which the "
                "domain_grpo trainer mode provides: launch through recipe/domain_grpo (trainer.v1.trainer_mode="
                "domain_grpo), or wrap the call in verl_ext.estimator.domain_advantage_inputs(...)"
            )
        domain_consistency = inputs.consistency
    if base_estimator is None:
        base_estimator = inputs.base_estimator if inputs is not None else "grpo"
    if norm_adv_by_std_in_grpo is None:
        norm_adv_by_std_in_grpo = True if config is None else bool(config.get("norm_adv_by_std_in_grpo", True))
    weights = None
    if domain_consistency is not None:
        weights = consistency_weights(domain_consistency, token_level_rewards.shape[0])  # [batch]
    kwargs.update(batch=batch, non_tensor_batch=non_tensor_batch)
    advantages, returns = base_advantages(
        base_estimator, token_level_rewards, response_mask, index, epsilon, norm_adv_by_std_in_grpo, config, **kwargs
    )  # [batch, response_len] each; GRPO returns the same tensor twice
    if weights is None:
        shaped = advantages
    else:
        shaped = advantages * weights.to(advantages).unsqueeze(-1)  # [batch, response_len]
    if inputs is not None:
        inputs.stats["advantage_abs_change_max"] = (shaped - advantages).abs().max().item() if shaped.numel() else 0.0
    return shaped, shaped if returns is advantages else returns
