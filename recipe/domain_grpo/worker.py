"""Actor worker of Domain-Aware GRPO: verl's `ActorRolloutRefWorker` plus the transformed view's forward pass.

Selected with `domain_recipe.actor_rollout_ref_worker=recipe.domain_grpo.worker.DomainActorRolloutRefWorker`.

How the second view runs inside verl's own engine, without copying it: verl's FSDP engine hands the full logits of each
micro-batch to a "logits processor" — the hook top-k distillation uses (`distillation_use_topk`), with the installed
loss function as the processor. `DomainLoss` is that loss function. Called as the processor with the original view's
logits, it runs the same engine methods (`prepare_model_inputs` → `module` → `prepare_model_outputs`) on a copy of
the micro-batch whose multi-modal inputs and position ids are the transformed view's — built here from the sample's
own processed pixels (`micro_batch.ViewBuilder`; the agent loop sends only the transform's name and seed) — and
returns the per-token divergence between the views in verl's own token layout (padded or packed). Called as the loss,
it adds λ · agg_loss(divergence) to verl's `ppo_loss`. One backward covers both views; FSDP and the rollout are
untouched. Rows without a view (verl's text-only padding rows, text-only data) keep their inputs and add nothing.

- old-log-prob pass (`compute_log_prob`, no gradient, rollout policy): the per-token D(π^D ‖ π) of
  `domain.shaping` → the field `domain_divergence` in TransferQueue → the trainer mode's D_i. verl's reference pass
  through the actor (LoRA: `no_lora_adapter=True`) and validation passes run as verl's, unmarked.
- update (`update_actor`): the DC term of `domain.constraint` in the same micro-batches, one backward.

It also repairs 3-D position ids that come back from TransferQueue ragged on the wrong dimension when every sequence of
a batch has the same length (`micro_batch.repair_position_ids`), a verl 0.9.1 bug that breaks plain GRPO as well.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from omegaconf import OmegaConf
from tensordict import TensorDict
from verl.single_controller.base.decorator import Dispatch, make_nd_compute_dataproto_dispatch_fn, register
from verl.trainer.ppo.core_algos import agg_loss
from verl.utils import tensordict_utils as tu
from verl.utils.metric import Metric
from verl.workers.engine_workers import ActorRolloutRefWorker
from verl.workers.utils.losses import ppo_loss
from verl.workers.utils.padding import no_padding_2_padding

from recipe.domain_grpo.micro_batch import (
    ViewBuilder,
    repair_position_ids,
    response_position_mask,
    sample_positions,
    transform_mask,
)
from verl_ext.config import DomainConfig
from verl_ext.divergences import (
    full_vocab_divergence,
    full_vocab_divergences,
    sampled_log_probs,
    sampled_token_divergence,
)

DIVERGENCE_KEY = "domain_divergence"
VAL_DIVERGENCE_FLAG = "domain_val_divergence"  # = validation.DIVERGENCE_FLAG (kept import-light here)
TRANSFORM_MASK_KEY = "domain_transform_mask"  # per sample: bit i set = domain.transforms.names[i] was one of its views
PASS_KEY = "domain_pass"  # "consistency" (old-log-prob pass) or "constraint" (update)


class DomainLoss:
    """verl's `ppo_loss` plus the DC term; also the logits processor that runs the transformed view."""

    def __init__(self, actor_config: Any, domain: DomainConfig, engine: Any, views: ViewBuilder | None = None) -> None:
        self.actor_config, self.domain, self.engine = actor_config, domain, engine
        self._views = views

    @property
    def views(self) -> ViewBuilder:
        """The view builder, made from the engine's processor on first use (a text-only model never needs one)."""
        if self._views is None:
            processor = self.engine.model_config.get_processor()
            self._views = ViewBuilder.from_processor(processor, self.domain.transforms.params)
        return self._views

    def __call__(self, *, data: TensorDict, model_output: dict | None = None, dp_group: Any = None, **kwargs: Any):
        if "student_logits" in kwargs:  # verl's engine calls the loss function as its logits processor first
            return self.process_logits(kwargs["student_logits"], data)
        domain_pass = tu.get_non_tensor_data(data=data, key=PASS_KEY, default=None)
        if domain_pass == "consistency":
            return torch.zeros((), device=next(iter(model_output.values())).device), {}
        loss, metrics = ppo_loss(self.actor_config, model_output, data, dp_group)
        if domain_pass != "constraint":
            return loss, metrics
        if DIVERGENCE_KEY not in model_output:
            raise RuntimeError(
                "the DC term is on but verl's engine did not call the logits processor (no full logits in this "
                "configuration); see recipe/domain_grpo/startup.py:check_engine_support"
            )
        per_token = no_padding_2_padding(model_output[DIVERGENCE_KEY], data)  # [bsz, response_len]
        mask = data.select("response_mask").to_padded_tensor()["response_mask"].to(per_token.dtype)
        mode = self.domain.constraint.loss_agg_mode or self.actor_config.loss_agg_mode
        divergence = agg_loss(per_token, mask, mode, **self.actor_config.global_batch_info)  # scalar
        # Reported like verl's pg_loss: summed over micro-batches when normalised by the global mini-batch.
        aggregation = metrics["actor/pg_loss"].aggregation
        metrics["actor/domain_loss"] = Metric(value=divergence.detach(), aggregation=aggregation)
        return loss + self.domain.constraint.weight * divergence, metrics

    def process_logits(self, student_logits: torch.Tensor, data: TensorDict) -> dict[str, torch.Tensor]:
        """Per-token divergence `(1, total_nnz)` between the transformed and the original view's distributions.

        In mixture mode each position gets the mean over its sample's built views; rows without a view get 0.
        """
        domain_pass = tu.get_non_tensor_data(data=data, key=PASS_KEY, default=None)
        if domain_pass is None:
            return {}
        # The transformed views' graphs are kept only when the DC gradient flows through them.
        grad = domain_pass == "constraint" and not self.domain.constraint.detach_transformed
        nnz = student_logits.shape[1]
        response = response_position_mask(data, nnz).to(student_logits.device)  # (nnz,)
        owner = sample_positions(data, nnz).to(student_logits.device)  # (nnz,) sample of each position, -1 = pad
        cfg = self.domain.shaping if domain_pass == "consistency" else self.domain.constraint
        original = student_logits.detach() if domain_pass == "consistency" else student_logits
        total = torch.zeros((1, nnz), dtype=torch.float32, device=student_logits.device)  # (1, nnz)
        built = torch.zeros(data.batch_size[0], device=student_logits.device)  # [bsz] views built per sample
        for k in range(len(self.views.validity(data))):  # 1 view, or every transform in mixture mode
            micro_batch, valid = self.views.micro_batch(data, k)
            if not any(valid):
                continue
            valid_rows = torch.tensor(valid, device=student_logits.device)  # [bsz]
            rows_ok = (owner >= 0) & valid_rows[owner.clamp_min(0)]  # (nnz,)
            mask = (response & rows_ok).unsqueeze(0)  # (1, nnz)
            transformed = self._transformed_logits(micro_batch, grad=grad)  # (1, nnz, V)
            if cfg.estimator != "full":
                out = self._sampled(transformed, original, mask, data, cfg)
            elif domain_pass == "consistency":
                out = full_vocab_divergences(transformed, original, mask, (cfg.divergence,))[cfg.divergence].float()
            else:
                out = full_vocab_divergence(transformed, original, mask, cfg.divergence, cfg.chunk_tokens)
            total = total + out * mask  # (1, nnz); 0 off the mask
            built = built + valid_rows
        per_position = built[owner.clamp_min(0)].clamp_min(1.0).unsqueeze(0)  # (1, nnz)
        return {DIVERGENCE_KEY: total / per_position}

    @staticmethod
    def _sampled(transformed: torch.Tensor, original: torch.Tensor, mask: torch.Tensor, data: TensorDict, cfg: Any):
        """verl's k1/k3 estimate of KL(π^D ‖ π) from the log-probs of the sampled tokens, `(1, nnz)`."""
        labels = torch.roll(data["input_ids"].values(), shifts=-1).unsqueeze(0)  # (1, nnz): position i predicts i + 1
        log_p = sampled_log_probs(transformed, labels, mask)  # (1, nnz)
        log_q = sampled_log_probs(original, labels, mask)  # (1, nnz)
        return sampled_token_divergence(log_p, log_q, mask, cfg.estimator)

    def _transformed_logits(self, micro_batch: TensorDict, grad: bool) -> torch.Tensor:
        """Run verl's own input/forward/output code on a transformed view's micro-batch; capture its logits."""
        captured: dict[str, torch.Tensor] = {}

        def capture(student_logits: torch.Tensor, data: TensorDict) -> dict:
            captured["logits"] = student_logits
            return {}

        # Only the logits are wanted from the transformed view: no log-probs, entropy or Σπ² of it.
        tu.assign_non_tensor(
            micro_batch, distillation_only=True, calculate_entropy=False, calculate_sum_pi_squared=False
        )
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            inputs, output_args = self.engine.prepare_model_inputs(micro_batch=micro_batch)
            raw = self.engine.module(**inputs, use_cache=False)
            self.engine.prepare_model_outputs(
                output=raw, output_args=output_args, micro_batch=micro_batch, logits_processor_func=capture
            )
        return captured["logits"]


def is_consistency_pass(data: TensorDict, domain: DomainConfig) -> bool:
    """Whether a `compute_log_prob` call is the old-log-prob pass that computes D_i.

    Not when shaping is off, for validation, or for verl's reference pass run through the actor with the LoRA adapter
    disabled (`no_lora_adapter=True`: the v1 trainer's `ref_in_actor` path): that pass is the reference policy, and
    marking it would let the reference model's divergence overwrite the policy's D_i. Always for the trainer mode's
    validation-invariance pass (`domain_val_divergence`, recipe/domain_grpo/validation.py).
    """
    if tu.get_non_tensor_data(data, VAL_DIVERGENCE_FLAG, default=False):  # the trainer's val-domain pass
        return True
    if not domain.shaping.enable or tu.get_non_tensor_data(data, "validate", default=False) is True:
        return False
    return not tu.get_non_tensor_data(data, "no_lora_adapter", default=False)


class DomainActorRolloutRefWorker(ActorRolloutRefWorker):
    """`ActorRolloutRefWorker` whose actor also runs the transformed view (see the module docstring)."""

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def init_model(self) -> None:
        super().init_model()
        section = self.config.get("domain")
        self.domain = DomainConfig.from_dict(OmegaConf.to_container(section, resolve=True) if section else {})
        if "actor" in self.role and (self.domain.needs_transformed_view or self.domain.validation.enable):
            if self.domain.constraint.active:
                # flash-attn's cross-entropy (verl's log-probs on GPU) writes its backward into the logits' storage
                # in place, without bumping autograd's version counter; the DC term's backward re-reads those logits.
                # verl's own switch selects its plain log-softmax + gather instead.
                os.environ["VERL_DISABLE_FLASH_ATTN_CE"] = "1"
            actor_config = self.loss_fn.keywords["config"]  # verl's partial(ppo_loss, config=actor_config)
            self.loss_fn = DomainLoss(actor_config, self.domain, self.actor.engine)
            self.actor.set_loss_fn(self.loss_fn)

    def _mark(self, data: TensorDict, domain_pass: str) -> None:
        tu.assign_non_tensor(data, distillation_use_topk=True, **{PASS_KEY: domain_pass})

    @register(dispatch_mode=make_nd_compute_dataproto_dispatch_fn(mesh_name="ref"))
    def compute_ref_log_prob(self, data: TensorDict) -> TensorDict:
        repair_position_ids(data)
        return super().compute_ref_log_prob(data)

    @register(dispatch_mode=make_nd_compute_dataproto_dispatch_fn(mesh_name="actor"))
    def compute_log_prob(self, data: TensorDict) -> TensorDict:
        repair_position_ids(data)
        if not is_consistency_pass(data, self.domain):
            return super().compute_log_prob(data)
        self._mark(data, "consistency")
        tu.assign_non_tensor(data, compute_loss=True)  # so the engine calls the logits processor
        # [batch] which transforms each sample's built views used, for the metrics
        transforms = transform_mask(data, self.loss_fn.views.validity(data), self.domain.transforms.names)
        output = super().compute_log_prob(data)
        if output is not None:  # (the collecting rank)
            output[TRANSFORM_MASK_KEY] = transforms
        return output

    @register(dispatch_mode=make_nd_compute_dataproto_dispatch_fn(mesh_name="actor"))
    def update_actor(self, data: TensorDict) -> TensorDict:
        repair_position_ids(data)
        if self.domain.constraint.active:
            self._mark(data, "constraint")
        return super().update_actor(data)
