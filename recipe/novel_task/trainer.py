"""The `rollout_dump` v1 trainer mode: the recipe's trainer, writing each step's rollouts with what SFT data needs.

verl 0.9.1's `trainer.rollout_data_dir` (`PPOTrainer._log_rollout_data`) writes `{step}.jsonl` with the decoded prompt
and response, the summed score, the ground truth and the TransferQueue key only: no row id, no reward components, no
truncation flag, and the prompt text is the same for every image, so it cannot be turned back into image SFT rows.
This mode overrides that one method (same call site: after the update, before TransferQueue is cleared) and writes, in
the same `{rollout_data_dir}/{step}.jsonl`, verl's keys plus:

    key, session        the TransferQueue key `{uid}_{session}_{index}` and the sample's index in its group
    row_index, split    the dataset row (`extra_info.index`, `extra_info.split`), to join the images back
    data_source, dataset
    response_ids        the sampled token ids; response_length; truncated (hit max_response_length without EOS)
    reward              the reward function's components (verl's `reward_extra_info`: hit, acc, format, ...)

Each step's metrics also gain `reward/<component>/mean` (e.g. `reward/acc/mean`, the exact rate of the rollouts).
Select with `trainer.v1.trainer_mode=rollout_dump trainer.rollout_data_dir=DIR` and register it with
`VERL_USE_EXTERNAL_MODULES=recipe.novel_task.plugins`. It subclasses the recipe's `DomainGRPOTrainer` (sync semantics,
D_i for `domain_grpo`), so it adds the dump to plain GRPO and to Domain-Aware GRPO alike; with `adv_estimator=grpo`
the parent hands verl's `_compute_advantage` nothing extra.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import transfer_queue as tq
from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.utils.profiler import marked_timer

from recipe.domain_grpo.trainer import DomainGRPOTrainer
from recipe.novel_task.rollouts import write_jsonl_atomic

TRAINER_MODE = "rollout_dump"
FIELDS = ["uid", "prompts", "responses", "rm_scores", "reward_model", "extra_info", "data_source", "extra_fields"]


def as_list(value: Any) -> list:
    """A TransferQueue non-tensor field (numpy array, NonTensorStack, LinkedList) as a plain list."""
    if value is None:
        return []
    return value.tolist() if hasattr(value, "tolist") else list(value)


def rollout_records(
    keys: list[str], data: Any, tokenizer: Any, step: int, max_response_length: int
) -> list[dict[str, Any]]:
    """One record per sample of a TransferQueue batch (`data` holds `FIELDS`), sorted by key."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    lengths = data["responses"].offsets().diff().tolist()  # [batch]
    responses = data["responses"].to_padded_tensor(padding=pad)  # [batch, max_len]
    prompts = data["prompts"].to_padded_tensor(padding=pad)  # [batch, max_prompt_len]
    scores = data["rm_scores"].to_padded_tensor(padding=0.0).sum(dim=1).tolist()  # [batch]
    extra_info, reward_model = as_list(data.get("extra_info")), as_list(data.get("reward_model"))
    sources, extra_fields = as_list(data.get("data_source")), as_list(data.get("extra_fields"))
    eos = {t for t in (tokenizer.eos_token_id, tokenizer.pad_token_id) if t is not None}
    records = []
    for i, key in enumerate(keys):
        ids = responses[i, : lengths[i]].tolist()
        info = extra_info[i] if i < len(extra_info) and extra_info[i] else {}
        fields = extra_fields[i] if i < len(extra_fields) and extra_fields[i] else {}
        parts = key.rsplit("_", 2)
        records.append(
            {
                "step": step,
                "key": key,
                "uid": parts[0] if len(parts) == 3 else key,
                "session": int(parts[1]) if len(parts) == 3 else 0,
                "row_index": info.get("index"),
                "split": info.get("split"),
                "dataset": info.get("dataset"),
                "data_source": sources[i] if i < len(sources) else None,
                "input": tokenizer.decode(prompts[i], skip_special_tokens=True),
                "output": tokenizer.decode(ids, skip_special_tokens=True),
                "gts": (reward_model[i] or {}).get("ground_truth") if i < len(reward_model) else None,
                "score": float(scores[i]),
                "reward": {k: _plain(v) for k, v in (fields.get("reward_extra_info") or {}).items()},
                "response_ids": ids,
                "response_length": lengths[i],
                "truncated": bool(lengths[i] >= max_response_length and (not ids or ids[-1] not in eos)),
            }
        )
    return sorted(records, key=lambda r: (str(r["uid"]), r["session"], r["key"]))


def _plain(value: Any) -> Any:
    """numpy/torch scalars as Python numbers (JSON)."""
    return value.item() if hasattr(value, "item") else value


def reward_component_metrics(extra_fields: list) -> dict[str, float]:
    """`reward/<component>/mean` over a batch: the mean of each numeric key of verl's `reward_extra_info`."""
    sums: dict[str, list[float]] = {}
    for fields in extra_fields:
        for key, value in ((fields or {}).get("reward_extra_info") or {}).items():
            value = _plain(value)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                sums.setdefault(key, []).append(float(value))
    return {f"reward/{key}/mean": sum(v) / len(v) for key, v in sorted(sums.items())}


@register_trainer(TRAINER_MODE)
class RolloutDumpTrainer(DomainGRPOTrainer):
    """The recipe's synchronous trainer; `_log_rollout_data` writes the study's richer rollout records, and each
    step's metrics gain `reward/<component>/mean` (verl 0.9.1 logs the reward's components for validation only)."""

    def _compute_metrics(self, batch: Any, metrics: dict, *args: Any, **kwargs: Any) -> Any:
        out = super()._compute_metrics(batch, metrics, *args, **kwargs)
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=["extra_fields"])
        metrics.update(reward_component_metrics(as_list(data["extra_fields"])))
        return out

    def _log_rollout_data(self, batch: Any, timing_raw: dict, rollout_data_dir: str) -> None:
        with marked_timer("dump_rollout_generations", timing_raw, color="green"):
            data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=FIELDS)
            max_len = int(self.config.data.max_response_length)
            records = rollout_records(list(batch.keys), data, self.tokenizer, int(self.global_steps), max_len)
            write_jsonl_atomic(Path(rollout_data_dir) / f"{self.global_steps}.jsonl", records)
