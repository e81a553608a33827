"""The `domain_grpo` v1 trainer mode: verl's synchronous trainer, handing each sample's D_i to the estimator.

Select it with `trainer.v1.trainer_mode=domain_grpo`. The only override is `_compute_advantage`: it reads the
per-token `domain_divergence` field (written by the actor worker's old-log-prob pass, in verl's nested token layout)
from TransferQueue, reduces it to each sample's D_i (mean over its response tokens, capped at 1), and opens
`verl_ext.estimator.domain_advantage_inputs` around verl's own, unchanged `_compute_advantage`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import transfer_queue as tq
from omegaconf import OmegaConf
from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
from verl.workers.utils.padding import response_from_nested

from recipe.domain_grpo.validation import DomainValidationMixin
from verl_ext.config import DomainConfig
from verl_ext.divergences import per_sample_mean
from verl_ext.estimator import consistency_weights, domain_advantage_inputs

DIVERGENCE_FIELD = "domain_divergence"
TRANSFORM_MASK_FIELD = "domain_transform_mask"
TRAINER_MODE = "domain_grpo"


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


def sample_consistency(per_token: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """D_i of eq. (4) from the worker's per-token divergence (nested, whole sequence) -> `[batch]` in [0, 1].

    Note:
        JS is already in [0, 1]; a KL (`domain.shaping.divergence=kl`) is capped as min(KL, 1).
    """
    padded = response_from_nested(per_token, response_mask).to_padded_tensor(0.0)  # [batch, response_len]
    mask = response_mask.to_padded_tensor(0) if response_mask.is_nested else response_mask  # [batch, response_len]
    return per_sample_mean(padded.float(), mask.float()).clamp(0.0, 1.0)


@register_trainer(TRAINER_MODE)
class DomainGRPOTrainer(DomainValidationMixin, PPOTrainerSync):
    """verl's `sync` trainer mode plus D_i for `algorithm.adv_estimator=domain_grpo`, and the invariance metrics of
    `domain.validation` after verl's own validation (`recipe/domain_grpo/validation.py`)."""

    # verl tests `self.trainer_mode == "sync"` in several places (replay buffer, dataloader refill, checkpoint state);
    # this mode is synchronous, so it reports "sync" whatever name selected it.
    @property
    def trainer_mode(self) -> str:
        return "sync"

    @trainer_mode.setter
    def trainer_mode(self, value: str) -> None:  # PPOTrainer.__init__ assigns the configured name
        pass

    def _domain_config(self) -> DomainConfig:
        section = self.config.get("domain")
        return DomainConfig.from_dict(OmegaConf.to_container(section, resolve=True) if section is not None else {})

    def _compute_advantage(self, batch: Any, metrics: dict) -> Any:
        consistency = None
        domain = self._domain_config()
        if self.config.algorithm.adv_estimator == "domain_grpo" and domain.shaping.enable:
            fields = [DIVERGENCE_FIELD, "response_mask", TRANSFORM_MASK_FIELD]
            data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
            consistency = sample_consistency(data[DIVERGENCE_FIELD], data["response_mask"])  # [batch], keys order
            metrics.update(consistency_metrics(consistency))
            metrics.update(transform_counts(data[TRANSFORM_MASK_FIELD], domain.transforms.names))
        with domain_advantage_inputs(consistency=consistency) as inputs:
            batch = super()._compute_advantage(batch, metrics)
        if "advantage_abs_change_max" in inputs.stats:  # domain_grpo ran: how far the shaping moved GRPO's advantages
            metrics["domain/advantage_abs_change_max"] = inputs.stats["advantage_abs_change_max"]
        return batch
