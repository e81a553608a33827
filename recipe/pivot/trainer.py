"""The `dpo` v1 trainer mode: verl's synchronous trainer, with DPO's per-sample coefficients as the advantages.

Select it with `trainer.v1.trainer_mode=dpo` and `algorithm.adv_estimator=dpo` (both set by `config/pivot_dpo.yaml`).
Overrides:

* `_compute_advantage`: reads, from TransferQueue, each sample's `old_log_probs` (the actor at the current weights),
  `ref_log_prob`, `response_mask` and `extra_fields` (the agent loop's `dpo_role`, the reward's extra info); forms
  the batch's pairs (`verl_ext.dpo.form_pairs`: offline pairs from the roles, online pairs from each prompt's correct
  vs wrong well-formed samples), computes Δ and the coefficients ±β σ(−βΔ)/N, logs the `dpo/*` metrics, and opens
  `verl_ext.dpo.dpo_advantage_inputs` around verl's own, unchanged `_compute_advantage`, whose registered `dpo`
  estimator spreads them over the response tokens.
* `__init__`: runs `recipe/pivot/startup.py:validate_dpo_run` first, so the DPO conditions are checked whichever
  entry point started the run (`recipe.pivot.main_pivot_dpo` checks them before Ray; verl's `main_ppo` does not).
* `_update_actor`: with `dpo.skip_empty_update` (default), a batch without any pair makes no optimiser step.

Everything else (rollout, reward, old/ref log-probs, the PPO loss, FSDP, checkpoints) is verl's.
"""

from __future__ import annotations

from typing import Any

import torch
import transfer_queue as tq
from omegaconf import OmegaConf
from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

from recipe.common.modes import SyncTrainerMode
from recipe.pivot.agent_loop import ROLE_KEY, TRUNCATED_KEY
from verl_ext.dpo import (
    DPOConfig,
    Pairs,
    dpo_advantage_inputs,
    dpo_delta,
    dpo_metrics,
    dpo_sample_coefficients,
    form_pairs,
    sequence_log_ratio,
)

TRAINER_MODE = "dpo"
FIELDS = ["response_mask", "old_log_probs", "ref_log_prob", "extra_fields"]


def split_key(key: str) -> tuple[str, int, int]:
    """verl's TransferQueue sample key `{uid}_{session_id}_{index}` -> (uid, session, index)."""
    uid, session, index = key.rsplit("_", 2)
    return uid, int(session), int(index)


def reward_flags(extra: dict, dpo: DPOConfig) -> tuple[bool, bool]:
    """(correct, well-formed) of a sample from the reward function's extra info (`extra_fields.reward_extra_info`).

    Raises:
        KeyError: the reward function does not return a key `dpo.pairs` names (online pairs need them).
    """
    info = (extra or {}).get("reward_extra_info") or {}
    keys = (dpo.pairs.correct_key, *dpo.pairs.well_formed_keys)
    missing = [k for k in keys if k not in info]
    if missing:
        raise KeyError(
            f"online DPO pairs need the reward keys {list(keys)}, but the reward function returned only "
            f"{sorted(info)}; use a reward that returns them (verl_ext/rewards.py:compute_score does) or set "
            "dpo.pairs.correct_key / dpo.pairs.well_formed_keys"
        )
    threshold = dpo.pairs.threshold
    return float(info[keys[0]]) >= threshold, all(float(info[k]) >= threshold for k in keys[1:])


def batch_pairs(keys: list[str], extras: list[dict], padding: list[bool], dpo: DPOConfig) -> Pairs:
    """The pairs of a TransferQueue batch (keys in batch order; the samples of a prompt sorted by session)."""
    parsed = [split_key(k) for k in keys]
    if any(index != 0 for _, _, index in parsed):
        raise NotImplementedError("dpo: multi-output agent loops (key index > 0) are not supported; use single-turn")
    order = sorted(range(len(keys)), key=lambda i: (parsed[i][0], parsed[i][1]))
    roles, correct, well_formed = [], [], []
    for i in order:
        role = (extras[i] or {}).get(ROLE_KEY, "sampled")
        flags = reward_flags(extras[i], dpo) if role == "sampled" and not padding[i] else (False, False)
        roles.append(role)
        correct.append(flags[0])
        well_formed.append(flags[1])
    pairs = form_pairs(
        [parsed[i][0] for i in order],
        roles,
        torch.tensor(correct, dtype=torch.bool),
        torch.tensor(well_formed, dtype=torch.bool),
        valid=torch.tensor([not padding[i] for i in order], dtype=torch.bool),
        max_per_prompt=dpo.pairs.max_per_prompt,
    )
    back = torch.tensor(order, dtype=torch.long)  # position in `order` -> batch index
    return Pairs(back[pairs.chosen], back[pairs.rejected], pairs.offline, *_counts(pairs))


def _counts(pairs: Pairs) -> tuple[int, int, int]:
    return pairs.online_prompts, pairs.skipped_prompts, pairs.broken_offline


def pair_reward_metrics(extras: list[dict], pairs: Pairs, key: str) -> dict[str, float]:
    """`dpo/chosen_<key>` and `dpo/rejected_<key>`: the reward's `key` (e.g. acc) averaged over the pairs' members."""
    out = {}
    for name, idx in (("chosen", pairs.chosen), ("rejected", pairs.rejected)):
        values = [((extras[i] or {}).get("reward_extra_info") or {}).get(key) for i in idx.tolist()]
        values = [float(v) for v in values if v is not None]
        if values:
            out[f"dpo/{name}_{key}"] = sum(values) / len(values)
    return out


@register_trainer(TRAINER_MODE)
class DPOTrainer(SyncTrainerMode, PPOTrainerSync):
    """verl's `sync` trainer mode with DPO's advantages (see the module docstring)."""

    _last_pairs: int | None = None

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        # DPO's start-up checks, whichever entry point started the run: verl's own main_ppo (plugins +
        # trainer_mode=dpo) never calls recipe/pivot/startup.py, and e.g. token-mean aggregation would make the
        # gradient wrong while the run continues. Here, in the TaskRunner, before any worker starts.
        from recipe.pivot.startup import validate_dpo_run

        validate_dpo_run(config)
        super().__init__(config, *args, **kwargs)

    def _dpo_config(self) -> DPOConfig:
        section = self.config.get("dpo")
        return DPOConfig.from_dict(OmegaConf.to_container(section, resolve=True) if section is not None else {})

    def _compute_advantage(self, batch: Any, metrics: dict) -> Any:
        dpo = self._dpo_config()
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=FIELDS)
        extras = list(data["extra_fields"].tolist()) if hasattr(data["extra_fields"], "tolist") else []
        extras = extras or list(data["extra_fields"])
        padding = [bool(tag.get("is_padding", False)) for tag in batch.tags]
        pairs = batch_pairs(list(batch.keys), extras, padding, dpo)
        padded = data.select("response_mask", "old_log_probs", "ref_log_prob").to_padded_tensor()
        log_ratio = sequence_log_ratio(padded["old_log_probs"], padded["ref_log_prob"], padded["response_mask"])  # [B]
        coefficients = dpo_sample_coefficients(dpo_delta(log_ratio, pairs), pairs, dpo.beta, len(batch.keys))  # [B]
        metrics.update(dpo_metrics(log_ratio, pairs, dpo.beta))
        metrics.update(pair_reward_metrics(extras, pairs, dpo.pairs.correct_key))
        metrics["dpo/truncated"] = float(sum(int((e or {}).get(TRUNCATED_KEY, 0)) for e in extras))
        self._last_pairs = len(pairs)
        with dpo_advantage_inputs(coefficients):
            return super()._compute_advantage(batch, metrics)

    def _update_actor(self, batch: Any, metrics: dict) -> Any:
        skip = self._last_pairs == 0 and self._dpo_config().skip_empty_update
        metrics["dpo/update_skipped"] = float(skip)
        if skip:
            return batch
        return super()._update_actor(batch, metrics)
