"""The `domain_grpo` v1 trainer mode: verl's synchronous trainer, handing each sample's D_i to the estimator.

Select it with `trainer.v1.trainer_mode=domain_grpo`. The only override is `_compute_advantage`: it reads the
per-sample `domain_consistency` field (written by the actor worker's old-log-prob pass) from TransferQueue and opens
`verl_ext.estimator.domain_advantage_inputs` around verl's own, unchanged `_compute_advantage`.
"""

from __future__ import annotations

from typing import Any

import torch
import transfer_queue as tq
from omegaconf import OmegaConf
from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

from verl_ext.config import DomainConfig
from verl_ext.estimator import consistency_weights, domain_advantage_inputs

CONSISTENCY_FIELD = "domain_consistency"
TRAINER_MODE = "domain_grpo"


def consistency_metrics(consistency: torch.Tensor) -> dict[str, float]:
    """`domain/js_mean` (mean D_i) and `domain/consistency_weight_mean` (mean 1 − D_i) of a batch `[batch]`."""
    weights = consistency_weights(consistency, consistency.numel())
    return {
        "domain/js_mean": consistency.float().mean().item(),
        "domain/consistency_weight_mean": weights.float().mean().item(),
    }


@register_trainer(TRAINER_MODE)
class DomainGRPOTrainer(PPOTrainerSync):
    """verl's `sync` trainer mode plus D_i for `algorithm.adv_estimator=domain_grpo`."""

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
        if self.config.algorithm.adv_estimator == "domain_grpo" and self._domain_config().shaping.enable:
            data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=[CONSISTENCY_FIELD])
            consistency = data[CONSISTENCY_FIELD].reshape(-1).float()  # [batch], in batch.keys order
            metrics.update(consistency_metrics(consistency))
        with domain_advantage_inputs(consistency=consistency):
            return super()._compute_advantage(batch, metrics)
