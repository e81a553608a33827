"""Invariance inside verl's validation: the validation rows answered under each configured transform.

After verl's own `_validate` (its `val-core/...` metrics unchanged), the recipe's trainer mode answers the first
`domain.validation.max_rows` validation rows again under every transform T of `domain.transforms.names` (rows whose
whitelist does not allow T are skipped for it), through verl's own agent loop, rollout and reward loop, with the
validation sampling settings (`rollout.val_kwargs`). The image is transformed before the processor, as the
`grpo_da` baseline does (`domain_val_view` row field → the recipe's agent loop). On the original view's responses the
actor then measures D(π(·|T(x)) ‖ π(·|x)), teacher-forced, exactly as DR's D_i (the old-log-prob pass of
`domain.shaping`, marked `domain_val_divergence`: its divergence, scope and level; by default the JS per response
token averaged over each response's tokens).

Metrics, per data source (`val-domain/<data_source>/...`), next to verl's `val-core/...`:

| key | meaning |
| --- | --- |
| `reward/<view>` | mean reward (verl's reward function) on view `identity` or T |
| `acc/<view>` | accuracy: the answer parses to exactly the label (`verl_ext.rewards.parse_prediction`) |
| `agreement/<T>` | share of responses whose answer on T(x) equals the one on x (an invalid one never agrees) |
| `js/<T>` | mean D between the views on the original view's responses |
| `rows/<view>` | how many responses each number is over |
"""

from __future__ import annotations

import logging
import math
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from recipe.domain_grpo.keys import DIVERGENCE_FIELD, SCOPE_FIELD, VAL_DIVERGENCE_FLAG, VAL_VIEW_FIELD, VIEW_KEY
from verl_ext.config import DomainConfig
from verl_ext.domain_loss import sample_consistency

logger = logging.getLogger(__name__)
PREFIX = "val-domain"


def domain_config(config: Any) -> DomainConfig:
    """The run's parsed `domain:` section (defaults where it is absent)."""
    from omegaconf import OmegaConf

    section = config.get("domain")
    return DomainConfig.from_dict(OmegaConf.to_container(section, resolve=True) if section is not None else {})


def consistency_from_fields(fields: Any) -> torch.Tensor:
    """D_i `[batch]` from the actor's TransferQueue fields (`domain_divergence`, `domain_scope`, `response_mask`).

    The fields are per position of the whole sequence (verl's nested layout, position i scores token i + 1);
    verl's `response_from_nested` slices the response part, then `verl_ext.domain_loss.sample_consistency` takes
    each sample's mean over its in-scope tokens, capped at 1.
    """
    from verl.workers.utils.padding import response_from_nested

    response_mask = fields["response_mask"]
    mask = response_mask.to_padded_tensor(0) if response_mask.is_nested else response_mask  # [batch, response_len]
    per_token = response_from_nested(fields[DIVERGENCE_FIELD], response_mask).to_padded_tensor(0.0)
    scope = response_from_nested(fields[SCOPE_FIELD], response_mask).to_padded_tensor(0.0)
    return sample_consistency(per_token, scope * mask)  # [batch]


@dataclass(frozen=True)
class ViewAnswer:
    """One validation response of one view.

    Attributes:
        data_source: the row's `data_source`.
        row: the row's `extra_info.index` (aligns views).
        session: which of the row's `val_kwargs.n` responses.
        view: "identity" or a transform name.
        reward: verl's reward of the response.
        prediction: the parsed answer (None: invalid), or None for a row without a class vocabulary.
        correct: whether `prediction` is the label (None without a class vocabulary).
    """

    data_source: str
    row: Any
    session: int
    view: str
    reward: float
    prediction: str | None
    correct: bool | None


def _row_id(row: dict, position: int) -> Any:
    """The row's `extra_info.index` (what the answers are aligned by), else its position."""
    return (row.get("extra_info") or {}).get("index", position)


def _whitelist(row: dict) -> list[str]:
    return list((row.get("extra_info") or {}).get("transforms") or [])


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else math.nan


def invariance_metrics(
    answers: Sequence[ViewAnswer], divergences: dict[tuple[str, Any, int, str], float]
) -> dict[str, float]:
    """The `val-domain/...` metrics (module docstring) from every view's answers and the original's divergences.

    Args:
        answers: every view's responses.
        divergences: {(data_source, row, session, T): D} on the original view's responses.
    """
    by_source: dict[str, dict[str, list[ViewAnswer]]] = defaultdict(lambda: defaultdict(list))
    for answer in answers:
        by_source[answer.data_source][answer.view].append(answer)
    metrics: dict[str, float] = {}
    for source, views in sorted(by_source.items()):
        original = {(a.row, a.session): a for a in views.get("identity", [])}
        for view, items in sorted(views.items()):
            key = f"{PREFIX}/{source}"
            metrics[f"{key}/rows/{view}"] = float(len(items))
            metrics[f"{key}/reward/{view}"] = _mean(a.reward for a in items)
            graded = [a.correct for a in items if a.correct is not None]
            if graded:
                metrics[f"{key}/acc/{view}"] = _mean(float(c) for c in graded)
            if view == "identity":
                continue
            pairs = [(a, original[(a.row, a.session)]) for a in items if (a.row, a.session) in original]
            graded_pairs = [(a, o) for a, o in pairs if a.correct is not None]
            if graded_pairs:
                agree = [a.prediction is not None and a.prediction == o.prediction for a, o in graded_pairs]
                metrics[f"{key}/agreement/{view}"] = _mean(float(x) for x in agree)
            js = [divergences[(source, a.row, a.session, view)] for a, _ in pairs]
            js = [d for d in js if d is not None]
            if js:
                metrics[f"{key}/js/{view}"] = _mean(js)
    return metrics


def parse_answer(response: str, ground_truth: str, extra_info: dict | None) -> tuple[str | None, bool | None]:
    """(prediction, correct) of a response with the project's strict parser; (None, None) without a class vocabulary."""
    from verl_ext.rewards import is_multi_label, parse_prediction

    info = dict(extra_info or {})
    class_names = list(info.get("class_names") or [])
    if not class_names:
        return None, None
    multi = is_multi_label("", info)
    prediction = parse_prediction(response, class_names, multi)
    if multi:
        from verl_ext.rewards import label_set

        truth = "|".join(sorted(label_set(ground_truth)))
        return prediction, prediction is not None and "|".join(sorted(label_set(prediction))) == truth
    return prediction, prediction is not None and prediction == ground_truth


class DomainValidationMixin:
    """The trainer-mode side: `_validate` = verl's `_validate` + the invariance pass (needs verl's PPOTrainer)."""

    def _validate(self) -> dict[str, float]:
        metrics = super()._validate()
        domain = domain_config(self.config)
        if domain.validation.enable and domain.transforms.names:
            metrics.update(self._validate_invariance(domain))
        return metrics

    # -- the invariance pass -------------------------------------------------------------------------------------
    def _validate_invariance(self, domain: Any) -> dict[str, float]:
        rows = [self.val_dataset[i] for i in range(min(domain.validation.max_rows, len(self.val_dataset)))]
        transforms = [n for n in domain.transforms.names if n != "identity" and any(n in _whitelist(r) for r in rows)]
        if not transforms:  # no validation row allows any configured transform (e.g. jigsaw rows): nothing to do
            return {}
        allowed = {t: {_row_id(r, i) for i, r in enumerate(rows) if t in _whitelist(r)} for t in transforms}
        answers: list[ViewAnswer] = []
        divergences: dict[tuple[str, Any, int, str], float] = {}
        measure_js = self._has_domain_worker()
        for view in ["identity", *transforms]:
            view_rows = [r for i, r in enumerate(rows) if view == "identity" or _row_id(r, i) in allowed[view]]
            batch = self._generate_view(view_rows, view)
            records = self._read_answers(batch, view)
            answers.extend(records)
            if view == "identity" and measure_js:
                for transform in transforms:
                    values = self._view_divergence(batch, records, transform, domain)
                    divergences.update({k: v for k, v in values.items() if k[1] in allowed[transform]})
            self._clear(batch)
        return invariance_metrics(answers, divergences)

    def _generate_view(self, rows: list[dict], view: str) -> Any:
        """verl's validation steps for one view: agent loop → replay buffer → (colocated) reward."""
        import numpy as np
        import transfer_queue as tq
        from verl.utils import tensordict_utils as tu
        from verl.utils.dataset.rl_dataset import collate_fn

        batch_dict = collate_fn([{**row, VAL_VIEW_FIELD: view} for row in rows])
        batch_dict["uid"] = np.array([str(uuid.uuid4()) for _ in rows], dtype=object)
        batch = tu.get_tensordict(batch_dict)
        tu.assign_non_tensor_data(batch, "global_steps", self.global_steps)
        tu.assign_non_tensor_data(batch, "validate", True)
        tags = [{"is_prompt": True, "status": "pending", "global_steps": self.global_steps} for _ in range(len(batch))]
        tq.kv_batch_put(keys=list(batch["uid"]), partition_id="val", tags=tags)
        self.agent_loop_manager.generate_sequences(batch)
        batch, _ = self.replay_buffer.sample(global_steps=self.global_steps, partition_id="val", batch_size=len(batch))
        if self.reward_loop_manager.reward_loop_worker_handles is None:
            self.checkpoint_manager.sleep_replicas()
            batch = self._compute_reward_colocate(batch)
            self.checkpoint_manager.update_weights()
        return batch

    def _read_answers(self, batch: Any, view: str) -> list[ViewAnswer]:
        import transfer_queue as tq

        fields = ["responses", "rm_scores", "extra_info", "data_source", "reward_model"]
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
        responses = data["responses"].to_padded_tensor(padding=self.tokenizer.pad_token_id)
        texts = [self.tokenizer.decode(ids, skip_special_tokens=True) for ids in responses]
        rewards = data["rm_scores"].to_padded_tensor(0.0).sum(-1).tolist()
        records = []
        for i, key in enumerate(batch.keys):
            info = data["extra_info"][i]
            truth = (data["reward_model"][i] or {}).get("ground_truth", "")
            prediction, correct = parse_answer(texts[i], str(truth), info)
            session = int(key.rsplit("_", 2)[1]) if key.count("_") >= 2 else 0
            source = str(data["data_source"][i])
            records.append(
                ViewAnswer(source, (info or {}).get("index", i), session, view, rewards[i], prediction, correct)
            )
        return records

    def _view_divergence(self, batch: Any, records: list[ViewAnswer], transform: str, domain: Any) -> dict:
        """D per response of the original view under `transform`, from the actor's consistency pass."""
        import transfer_queue as tq
        from tensordict import TensorDict
        from tensordict.tensorclass import NonTensorStack
        from verl.trainer.ppo.padding_utils import upsample_batch_to_divisible_size

        from verl_ext.transforms import draw_seed

        specs = [
            {VIEW_KEY: [{"transform": transform, "seed": draw_seed(domain.transforms.seed, -1, f"val:{r.row}")}]}
            for r in records
        ]
        fields = TensorDict({}, batch_size=[len(specs)])
        fields["extra_fields"] = NonTensorStack(*specs)
        tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=fields)
        dp_size = self._actor_dp_size()
        padded = upsample_batch_to_divisible_size(batch, dp_size, self.tokenizer.eos_token_id)
        padded.extra_info.update(
            {
                "calculate_entropy": False,
                "compute_loss": False,
                "temperature": self.config.actor_rollout_ref.rollout.temperature,
                VAL_DIVERGENCE_FLAG: True,
            }
        )
        self.actor_rollout_wg.compute_log_prob(padded)
        fields = [DIVERGENCE_FIELD, SCOPE_FIELD, "response_mask"]
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
        values = consistency_from_fields(data).tolist()
        pad_keys = padded.keys[len(batch.keys) :]
        if pad_keys:
            tq.kv_clear(keys=pad_keys, partition_id=batch.partition_id)
        return {(r.data_source, r.row, r.session, transform): d for r, d in zip(records, values, strict=True)}

    def _has_domain_worker(self) -> bool:
        """The js metrics need the recipe's actor worker (it runs the view); without it they are left out, said once."""
        from omegaconf import OmegaConf

        from recipe.common.worker_hook import WORKER_KEY, load_worker_cls
        from recipe.domain_grpo.worker import DomainActorRolloutRefWorker

        path = OmegaConf.select(self.config, WORKER_KEY, default=None)
        if path and issubclass(load_worker_cls(str(path)), DomainActorRolloutRefWorker):
            return True
        if not getattr(self, "_warned_no_domain_worker", False):
            logger.warning("domain.validation: %s is not the recipe's worker; val-domain/*/js/* are not measured", path)
            self._warned_no_domain_worker = True
        return False

    def _actor_dp_size(self) -> int:
        info = getattr(self.actor_rollout_wg, "_dispatch_info", {}) or {}
        ranks = info.get("actor")
        return max(ranks) + 1 if ranks else 1

    @staticmethod
    def _clear(batch: Any) -> None:
        import transfer_queue as tq

        tq.kv_clear(keys=batch.keys, partition_id=batch.partition_id)
