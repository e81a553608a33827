"""Actor worker of Domain-Aware GRPO: verl's `ActorRolloutRefWorker` plus the transformed view's forward pass.

Selected with `domain_recipe.actor_rollout_ref_worker=recipe.domain_grpo.worker.DomainActorRolloutRefWorker`.

How the second view runs inside verl's own engine, without copying it: verl's FSDP engine hands the full logits of each
micro-batch to a "logits processor" — the hook top-k distillation uses (`distillation_use_topk`), with the installed
loss function as the processor. `DomainLoss` is that loss function. Called as the processor with the original view's
logits, it runs the same engine methods (`prepare_model_inputs` → `module` → `prepare_model_outputs`) on a copy of
the micro-batch whose multi-modal inputs and position ids are the transformed view's — built here from the sample's
own processed pixels (`micro_batch.ViewBuilder`; the agent loop sends only the transform's name and seed) — and
returns the per-token divergence between the views (`verl_ext.domain_loss.token_divergence`) and the scope it covers
(every response token, or the answer span), in verl's own token layout (padded or packed). Called as the loss, it adds
the DC term (`verl_ext.domain_loss.constraint_term`) to the loss verl's worker chose — `ppo_loss`, or
`distillation_ppo_loss` with distillation on, whose logits-processor outputs it also passes through — so every term
of verl's own loss is kept. One backward covers both views; FSDP and the rollout are untouched. Rows without a view
(verl's text-only padding rows, text-only data) keep their inputs and add nothing.

- old-log-prob pass (`compute_log_prob`, no gradient, rollout policy): the per-token D(π^D ‖ π) of
  `domain.shaping` (or, at `level=sequence`, each sample's f(r)) → the fields `domain_divergence` and `domain_scope`
  in TransferQueue → the trainer mode's D_i (`verl_ext.domain_loss.sample_consistency`). verl's reference pass
  through the actor (LoRA: `no_lora_adapter=True`) and validation passes run as verl's, unmarked.
- update (`update_actor`): the DC term of `domain.constraint` in the same micro-batches, one backward.

It also repairs 3-D position ids that come back from TransferQueue ragged on the wrong dimension when every sequence of
a batch has the same length (`micro_batch.repair_position_ids`), a verl 0.9.1 bug that breaks plain GRPO as well.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import torch
from omegaconf import OmegaConf
from tensordict import TensorDict
from verl.single_controller.base.decorator import Dispatch, make_nd_compute_dataproto_dispatch_fn, register
from verl.utils import tensordict_utils as tu
from verl.utils.metric import AggregationType, Metric
from verl.workers.engine_workers import ActorRolloutRefWorker
from verl.workers.utils.padding import no_padding_2_padding

from recipe.domain_grpo.keys import (
    BASE_TOPK_KEY,
    DIVERGENCE_FIELD,
    PASS_KEY,
    SCOPE_FIELD,
    TRANSFORM_MASK_FIELD,
    VAL_DIVERGENCE_FLAG,
)
from recipe.domain_grpo.micro_batch import (
    ViewBuilder,
    answer_token_mask,
    repair_position_ids,
    response_position_mask,
    sample_positions,
    transform_mask,
)
from verl_ext.config import DomainConfig
from verl_ext.domain_loss import (
    constraint_term,
    gradient_sides,
    sampled_log_ratio,
    sequence_consistency,
    token_divergence,
)


class DomainLoss:
    """verl's own actor loss (`ppo_loss`, or `distillation_ppo_loss` with distillation on) plus the DC term; also the
    logits processor that runs the transformed view (and verl's own processor where verl asked for it)."""

    def __init__(
        self,
        base_loss: Callable[..., Any],
        domain: DomainConfig,
        engine: Any,
        views: ViewBuilder | None = None,
        token_text: Callable[[int], str] | None = None,
    ) -> None:
        """
        Args:
            base_loss: the loss verl's worker chose (`partial(ppo_loss | distillation_ppo_loss, config=...)`): called
                unchanged for verl's terms, and as verl's logits processor when verl set `distillation_use_topk`.
            domain: the `domain:` section.
            engine: verl's actor engine (runs the transformed view).
            views: the view builder (default: built from the engine's processor on first use).
            token_text: a token id's text, for `scope=answer` (default: the engine's tokenizer).
        """
        self.base_loss, self.domain, self.engine = base_loss, domain, engine
        self.actor_config = base_loss.keywords["config"]  # verl's ActorConfig (loss_agg_mode, global_batch_info)
        self._views, self._token_text = views, token_text

    @property
    def views(self) -> ViewBuilder:
        """The view builder, made from the engine's processor on first use (a text-only model never needs one)."""
        if self._views is None:
            processor = self.engine.model_config.get_processor()
            self._views = ViewBuilder.from_processor(processor, self.domain.transforms.params)
        return self._views

    @property
    def token_text(self) -> Callable[[int], str]:
        """A token id's text (cached per id), from the engine's tokenizer; used by `scope=answer` only."""
        if self._token_text is None:
            tokenizer = self.engine.model_config.get_processor().tokenizer
            self._token_text = functools.lru_cache(maxsize=None)(lambda i: tokenizer.decode([i]))
        return self._token_text

    def __call__(self, *, data: TensorDict, model_output: dict | None = None, dp_group: Any = None, **kwargs: Any):
        if "student_logits" in kwargs:  # verl's engine calls the loss function as its logits processor first
            return self.process_logits(data=data, **kwargs)
        domain_pass = tu.get_non_tensor_data(data=data, key=PASS_KEY, default=None)
        if domain_pass == "consistency":
            return torch.zeros((), device=next(iter(model_output.values())).device), {}
        loss, metrics = self.base_loss(model_output=model_output, data=data, dp_group=dp_group)
        if domain_pass != "constraint":
            return loss, metrics
        if DIVERGENCE_FIELD not in model_output:
            raise RuntimeError(
                "the DC term is on but verl's engine did not call the logits processor (no full logits in this "
                "configuration); see recipe/domain_grpo/startup.py:check_engine_support"
            )
        per_token = no_padding_2_padding(model_output[DIVERGENCE_FIELD], data)  # [bsz, response_len]
        scope = no_padding_2_padding(model_output[SCOPE_FIELD], data)  # [bsz, response_len], in-scope tokens
        mode = self.domain.constraint.loss_agg_mode or self.actor_config.loss_agg_mode
        term, divergence, token_mean = constraint_term(
            per_token, scope, self.domain.constraint.weight, mode, **self.actor_config.global_batch_info
        )
        # Reported like verl's pg_loss: summed over micro-batches when normalised by the global mini-batch.
        pg_loss = metrics.get("actor/pg_loss")
        aggregation = pg_loss.aggregation if isinstance(pg_loss, Metric) else AggregationType.MEAN
        metrics["actor/domain_loss"] = Metric(value=divergence.detach(), aggregation=aggregation)
        metrics["actor/domain_divergence_token_mean"] = Metric(value=token_mean, aggregation=AggregationType.MEAN)
        real = data.select("response_mask").to_padded_tensor()["response_mask"].sum(-1) > 0  # [bsz] not verl's padding
        share = no_view_share(self.views.validity(data), real.tolist())
        metrics["actor/domain_no_view_share"] = Metric(value=share, aggregation=AggregationType.MEAN)
        return loss + term, metrics

    def process_logits(self, *, student_logits: torch.Tensor, data: TensorDict, **kwargs: Any) -> dict:
        """verl's own processor outputs (where verl asked for them) plus, on a marked pass, the per-position fields
        `domain_divergence` and `domain_scope` `(1, total_nnz)` (see `domain_fields`)."""
        domain_pass = tu.get_non_tensor_data(data=data, key=PASS_KEY, default=None)
        if domain_pass is None:  # an unmarked pass: only verl asked for the processor (top-k distillation)
            return self.base_loss(student_logits=student_logits, data=data, **kwargs)
        outputs: dict[str, torch.Tensor] = {}
        if tu.get_non_tensor_data(data=data, key=BASE_TOPK_KEY, default=False):  # verl's top-k distillation too
            outputs.update(self.base_loss(student_logits=student_logits, data=data, **kwargs))
        outputs.update(self.domain_fields(student_logits, data))
        return outputs

    def domain_fields(self, student_logits: torch.Tensor, data: TensorDict) -> dict[str, torch.Tensor]:
        """Per-position divergence between the transformed and the original view, and the scope it covers.

        `domain_divergence` `(1, nnz)`: at each in-scope position D(π^D ‖ π) of the pass's config (token level) or,
        for `shaping.level=sequence`, the sample's f(r) (`verl_ext.domain_loss.sequence_consistency`); in mixture
        mode the mean over the sample's built views; 0 elsewhere. `domain_scope` `(1, nnz)`: 1 at the positions
        predicting an in-scope response token of a sample with a built view.
        """
        consistency = tu.get_non_tensor_data(data=data, key=PASS_KEY, default=None) == "consistency"
        cfg = self.domain.shaping if consistency else self.domain.constraint
        original_grad, transformed_grad = (False, False) if consistency else gradient_sides(cfg.target)
        nnz, device = student_logits.shape[1], student_logits.device
        span = answer_token_mask(data, self.token_text) if cfg.scope == "answer" else None  # [bsz, response_len]
        in_scope = response_position_mask(data, nnz, span).to(device)  # (nnz,)
        owner = sample_positions(data, nnz).to(device)  # (nnz,) sample of each position, -1 = pad
        original = student_logits if original_grad else student_logits.detach()
        labels = torch.roll(data["input_ids"].values(), shifts=-1).unsqueeze(0).to(device)  # (1, nnz): i predicts i+1
        sequence = consistency and self.domain.shaping.level == "sequence"
        total = torch.zeros((1, nnz), dtype=torch.float32, device=device)  # (1, nnz)
        built = torch.zeros(data.batch_size[0], device=device)  # [bsz] views built per sample
        scope = torch.zeros((1, nnz), dtype=torch.bool, device=device)  # (1, nnz)
        for k in range(len(self.views.validity(data))):  # 1 view, or every transform in mixture mode
            micro_batch, valid = self.views.micro_batch(data, k)
            if not any(valid):
                continue
            valid_rows = torch.tensor(valid, device=device)  # [bsz]
            mask = (in_scope & (owner >= 0) & valid_rows[owner.clamp_min(0)]).unsqueeze(0)  # (1, nnz)
            transformed = self._transformed_logits(micro_batch, grad=transformed_grad)  # (1, nnz, V)
            if sequence:
                log_ratio = sampled_log_ratio(transformed, original, labels, mask)  # (1, nnz)
                per_sample = torch.zeros(len(valid), dtype=torch.float64, device=device)  # [bsz] Σ log ratio
                per_sample.index_add_(0, owner.clamp_min(0), log_ratio[0].double() * mask[0])
                score = sequence_consistency(per_sample.unsqueeze(-1), torch.ones_like(per_sample).unsqueeze(-1))
                out = score[owner.clamp_min(0)].float().unsqueeze(0)  # (1, nnz): f(r_i) on sample i's positions
            else:
                chunk = getattr(cfg, "chunk_tokens", None)
                out = token_divergence(transformed, original, mask, cfg.divergence, cfg.estimator, labels, chunk)
                out = out.float()  # (1, nnz)
            total = total + torch.where(mask, out, torch.zeros_like(out))  # (1, nnz); 0 off the mask
            built = built + valid_rows
            scope = scope | mask
        per_position = built[owner.clamp_min(0)].clamp_min(1.0).unsqueeze(0)  # (1, nnz)
        return {DIVERGENCE_FIELD: total / per_position, SCOPE_FIELD: scope.float()}

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


def no_view_share(validity: list[list[bool]], real: list[bool]) -> float:
    """Share of a micro-batch's real samples (`real[i]`: it has response tokens, i.e. is not verl's padding) for which
    no transformed view was built (`validity[k][i]` false for every view k): their DC term is 0 (a held-out split by
    `augment.is_training_split`, or no image). Logged as `actor/domain_no_view_share` on every DC update."""
    has_view = [any(col) for col in zip(*validity, strict=True)] if validity else [False] * len(real)
    count = sum(1 for r, v in zip(real, has_view, strict=True) if r and not v)
    return count / max(1, sum(real))


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
            # verl's own choice (ppo_loss, or distillation_ppo_loss with distillation on) stays the base: every term
            # verl computes is kept, the DC term is added on top.
            self.loss_fn = DomainLoss(self.loss_fn, self.domain, self.actor.engine)
            self.actor.set_loss_fn(self.loss_fn)

    def _mark(self, data: TensorDict, domain_pass: str) -> None:
        """Ask verl's engine for the logits processor; remember whether verl itself wanted it (top-k distillation)."""
        base_topk = bool(tu.get_non_tensor_data(data, "distillation_use_topk", default=False))
        tu.assign_non_tensor(data, distillation_use_topk=True, **{PASS_KEY: domain_pass, BASE_TOPK_KEY: base_topk})

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
            output[TRANSFORM_MASK_FIELD] = transforms
        return output

    @register(dispatch_mode=make_nd_compute_dataproto_dispatch_fn(mesh_name="actor"))
    def update_actor(self, data: TensorDict) -> TensorDict:
        repair_position_ids(data)
        if self.domain.constraint.active:
            self._mark(data, "constraint")
        return super().update_actor(data)
