"""The `domain_grpo` v1 trainer mode: verl's synchronous trainer, handing each sample's D_i to the estimator.

Select it with `trainer.v1.trainer_mode=domain_grpo`. The override is `_compute_advantage`: it reads the per-token
`domain_divergence` and `domain_scope` fields (written by the actor worker's old-log-prob pass, in verl's nested token
layout) from TransferQueue and reduces them to each sample's D_i (`verl_ext.domain_loss.sample_consistency`: mean over
its in-scope response tokens, capped at 1). Then exactly one of:
- stock verl 0.9.1: opens `verl_ext.estimator.domain_advantage_inputs` around verl's own, unchanged
  `_compute_advantage`, whose `compute_advantage` calls the estimator verl_ext registered;
- verl patched with `upstream/verl-0.9.1-domain_grpo.patch` (detected by `verl_has_domain_grpo`): writes D_i as the
  per-sample field `domain_consistency` (zeros with shaping off) and calls verl's `_compute_advantage`, which reads it
  and hands it to verl's own `domain_grpo` through `compute_advantage`; no context is opened. At start-up the mode
  copies `domain.shaping.base_estimator` to verl's typed `algorithm.domain_grpo_base_estimator`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import transfer_queue as tq
from omegaconf import DictConfig, open_dict
from tensordict import TensorDict
from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

from recipe.common.modes import SyncTrainerMode
from recipe.domain_grpo.keys import (
    BASE_ESTIMATOR_KEY,
    CONSISTENCY_FIELD,
    DIVERGENCE_FIELD,
    SCOPE_FIELD,
    TRAINER_MODE,
    TRANSFORM_MASK_FIELD,
)
from recipe.domain_grpo.validation import DomainValidationMixin, consistency_from_fields, domain_config
from verl_ext.config import DomainConfigError
from verl_ext.estimator import check_base_estimator, consistency_weights, domain_advantage_inputs, verl_has_domain_grpo


def consistency_metrics(consistency: torch.Tensor) -> dict[str, float]:
    """`domain/js_mean`, `domain/js_min`, `domain/js_max` (D_i over the batch `[batch]`) and
    `domain/consistency_weight_mean` (mean 1 − D_i)."""
    weights = consistency_weights(consistency, consistency.numel())
    return {
        "domain/js_mean": consistency.float().mean().item(),
        "domain/js_min": consistency.float().min().item(),
        "domain/js_max": consistency.float().max().item(),
        "domain/consistency_weight_mean": weights.float().mean().item(),
    }


def transform_counts(transform_masks: torch.Tensor, names: Sequence[str]) -> dict[str, int]:
    """`domain/transform_count/<name>`: how many samples' views used each transform.

    Args:
        transform_masks: `[batch]` bit masks from the worker, bit i = `names[i]`.
        names: `domain.transforms.names`.
    """
    masks = transform_masks.reshape(-1).long()
    counts = {name: int(((masks >> i) & 1).sum()) for i, name in enumerate(names)}
    return {f"domain/transform_count/{name}": c for name, c in counts.items() if c}


def empty_scope_count(scope: Any, transform_masks: torch.Tensor) -> dict[str, int]:
    """`domain/empty_scope_count`: samples with a built view but no in-scope token (with `domain.shaping.scope=answer`:
    no well-formed answer), whose D_i is 0 (advantage unshaped).

    Args:
        scope: the worker's `domain_scope` field (nested `[batch, j]`).
        transform_masks: `[batch]` the worker's bit masks (0: no view built).
    """
    in_scope = torch.stack([row.sum() for row in scope.unbind()]) if scope.is_nested else scope.sum(-1)  # [batch]
    return {"domain/empty_scope_count": int(((in_scope == 0) & (transform_masks.reshape(-1) != 0)).sum())}


def samples_without_view(transform_masks: torch.Tensor, tags: Sequence[dict] = ()) -> dict[str, int]:
    """`domain/samples_without_view`: training samples of the step with no transformed view built (held-out split by
    `recipe.domain_grpo.augment.is_training_split`, or no image), whose D_i is 0 and whose DC term is 0.

    Args:
        transform_masks: `[batch]` the worker's bit masks (0: no view built).
        tags: `[batch]` verl's per-sample tags; samples tagged `is_padding` are not counted. Empty: none is.
    """
    masks = transform_masks.reshape(-1)  # [batch]
    padding = torch.tensor([bool(t.get("is_padding", False)) for t in tags] or [False] * masks.numel())  # [batch]
    return {"domain/samples_without_view": int(((masks == 0) & ~padding).sum())}


def prepare_algorithm_config(config: DictConfig) -> None:
    """Start-up: check `domain.shaping.base_estimator` against verl's registry; on a patched verl, set verl's key.

    Raises DomainConfigError when the base estimator is not one verl can run, or when a patched verl's
    `algorithm.domain_grpo_base_estimator` is set to a different estimator than `domain.shaping.base_estimator`.
    """
    if config.algorithm.adv_estimator != "domain_grpo":
        return
    base = domain_config(config).shaping.base_estimator
    try:
        check_base_estimator(base)
    except ValueError as err:
        raise DomainConfigError(str(err)) from None
    if not verl_has_domain_grpo():
        return
    given = config.algorithm.get(BASE_ESTIMATOR_KEY)
    if given is not None and given != base:
        raise DomainConfigError(
            f"algorithm.{BASE_ESTIMATOR_KEY}={given!r} differs from domain.shaping.base_estimator={base!r}; "
            "set only domain.shaping.base_estimator (the recipe copies it to verl's key)"
        )
    with open_dict(config.algorithm):
        config.algorithm[BASE_ESTIMATOR_KEY] = base


@register_trainer(TRAINER_MODE)
class DomainGRPOTrainer(SyncTrainerMode, DomainValidationMixin, PPOTrainerSync):
    """verl's `sync` trainer mode plus D_i for `algorithm.adv_estimator=domain_grpo`, and the invariance metrics of
    `domain.validation` after verl's own validation (`recipe/domain_grpo/validation.py`); synchronous, so it reports
    `trainer_mode == "sync"` to verl whatever name selected it (`recipe.common.modes.SyncTrainerMode`)."""

    def __init__(self, config: DictConfig, *args: Any, **kwargs: Any) -> None:
        prepare_algorithm_config(config)  # before verl builds anything: a bad base estimator fails at start-up
        super().__init__(config, *args, **kwargs)

    def _compute_advantage(self, batch: Any, metrics: dict) -> Any:
        is_domain_grpo = self.config.algorithm.adv_estimator == "domain_grpo"
        domain = domain_config(self.config)
        consistency = None
        if is_domain_grpo and domain.shaping.enable:
            fields = [DIVERGENCE_FIELD, SCOPE_FIELD, "response_mask", TRANSFORM_MASK_FIELD]
            data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
            consistency = consistency_from_fields(data)  # [batch], keys order
            metrics.update(consistency_metrics(consistency))
            metrics.update(transform_counts(data[TRANSFORM_MASK_FIELD], domain.transforms.names))
            metrics.update(empty_scope_count(data[SCOPE_FIELD], data[TRANSFORM_MASK_FIELD]))
            metrics.update(samples_without_view(data[TRANSFORM_MASK_FIELD], list(getattr(batch, "tags", None) or [])))
        if verl_has_domain_grpo():  # verl's own compute_advantage hands D_i to verl's own domain_grpo
            if is_domain_grpo:
                if consistency is None:  # shaping off: D ≡ 0, the base estimator's advantages bit for bit
                    consistency = torch.zeros(len(batch))
                field = TensorDict({CONSISTENCY_FIELD: consistency.float()}, batch_size=len(batch))  # [batch]
                tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=field)
            return super()._compute_advantage(batch, metrics)
        with domain_advantage_inputs(consistency=consistency, base_estimator=domain.shaping.base_estimator) as inputs:
            batch = super()._compute_advantage(batch, metrics)
        if "advantage_abs_change_max" in inputs.stats:  # domain_grpo ran: how far the shaping moved GRPO's advantages
            metrics["domain/advantage_abs_change_max"] = inputs.stats["advantage_abs_change_max"]
        return batch
