"""Which of verl's log-prob passes the recipe's worker marks as the consistency pass (the one that computes D_i).

verl's v1 trainer runs the reference log-probs through the actor's own `compute_log_prob` with `no_lora_adapter=True`
when the reference lives in the actor (LoRA). Marking that pass would let the reference model's divergence overwrite
the policy's D_i in TransferQueue; it must run as verl's, unmarked (hardening issue, point 1).
"""

from types import SimpleNamespace

import pytest
import torch
from tensordict import TensorDict
from tensordict.tensorclass import NonTensorStack
from verl.utils import tensordict_utils as tu
from verl.workers.engine_workers import ActorRolloutRefWorker

from recipe.domain_grpo.keys import PASS_KEY
from recipe.domain_grpo.keys import TRANSFORM_MASK_FIELD as TRANSFORM_MASK_KEY
from recipe.domain_grpo.worker import DomainActorRolloutRefWorker, is_consistency_pass
from verl_ext.config import DomainConfig


def _batch(**flags) -> TensorDict:
    data = TensorDict({"input_ids": torch.zeros(2, 3, dtype=torch.long)}, batch_size=[2])
    data["extra_fields"] = NonTensorStack(*[{"domain_view": [{"transform": "rot90", "seed": 0}]}] * 2)
    tu.assign_non_tensor(data, **flags)
    return data


@pytest.mark.parametrize(
    ("flags", "shaping", "expected"),
    [
        ({}, True, True),  # verl's old-log-prob pass with the rollout policy
        ({"no_lora_adapter": True}, True, False),  # verl's reference pass through the actor (LoRA)
        ({"no_lora_adapter": False}, True, True),
        ({"validate": True}, True, False),
        ({}, False, False),  # shaping off: no D_i at all
    ],
)
def test_is_consistency_pass(flags, shaping, expected):
    domain = DomainConfig.from_dict({"shaping": {"enable": shaping}})
    assert is_consistency_pass(_batch(**flags), domain) is expected


def test_the_reference_pass_through_the_actor_runs_unmarked(monkeypatch):
    seen = []

    def verl_compute_log_prob(self, data):  # stands in for verl's ActorRolloutRefWorker.compute_log_prob
        seen.append(tu.get_non_tensor_data(data, PASS_KEY, default=None))
        return TensorDict({"log_probs": torch.zeros(2, 3)}, batch_size=[2])

    monkeypatch.setattr(ActorRolloutRefWorker, "compute_log_prob", verl_compute_log_prob)
    worker = DomainActorRolloutRefWorker.__new__(DomainActorRolloutRefWorker)  # no Ray, no engine
    worker.domain = DomainConfig()
    worker.loss_fn = SimpleNamespace(views=SimpleNamespace(validity=lambda data: [[True, False]]))

    reference = worker.compute_log_prob(_batch(no_lora_adapter=True))
    assert seen == [None] and TRANSFORM_MASK_KEY not in reference.keys()

    policy = worker.compute_log_prob(_batch())
    assert seen == [None, "consistency"]
    assert policy[TRANSFORM_MASK_KEY].tolist() == [1, 0]  # rot90 (names[0]) built for sample 0 only


@pytest.mark.parametrize("off", [{"constraint": {"weight": 0.0}}, {"constraint": {"enable": False}}])
def test_domain_terms_off_leave_every_pass_to_verl_unmarked(monkeypatch, off):
    # λ = 0 (or DC disabled) and shaping off: the worker hands verl's log-prob and update passes their batches
    # untouched — no pass mark, no transform mask, no view — so the actor computes verl's own loss. With the
    # estimator's reduction to `grpo` bit for bit (tests/verl_ext/test_estimator_on_cpu.py,
    # tests/recipe/test_trainer_mode_on_cpu.py) this is `domain_grpo` with the terms off = `grpo`.
    seen = []

    def verl_pass(name):
        def run(self, data):
            seen.append((name, tu.get_non_tensor_data(data, PASS_KEY, default=None)))
            return TensorDict({"log_probs": torch.zeros(2, 3)}, batch_size=[2])

        return run

    monkeypatch.setattr(ActorRolloutRefWorker, "compute_log_prob", verl_pass("log_prob"))
    monkeypatch.setattr(ActorRolloutRefWorker, "update_actor", verl_pass("update"))
    worker = DomainActorRolloutRefWorker.__new__(DomainActorRolloutRefWorker)  # no Ray, no engine
    worker.domain = DomainConfig.from_dict({**off, "shaping": {"enable": False}})
    worker.loss_fn = None  # no DomainLoss is ever needed
    assert not worker.domain.constraint.active and not worker.domain.needs_transformed_view
    out = worker.compute_log_prob(_batch())
    worker.update_actor(_batch())
    assert seen == [("log_prob", None), ("update", None)] and TRANSFORM_MASK_KEY not in out.keys()


def _distillation_worker(monkeypatch, domain: dict):
    """The recipe's worker after `init_model` on a run with verl's distillation on (verl chose its loss)."""
    from functools import partial

    from omegaconf import OmegaConf
    from verl.trainer.distillation.losses import distillation_ppo_loss
    from verl.workers.config import DistillationConfig, DistillationLossConfig, FSDPActorConfig

    actor_config = FSDPActorConfig(rollout_n=2, ppo_micro_batch_size_per_gpu=2)
    # (enabled=False only skips the teacher-pool checks of the dataclass; the loss reads distillation_loss alone)
    distillation = DistillationConfig(enabled=False, distillation_loss=DistillationLossConfig(loss_mode="k3"))
    verl_loss = partial(distillation_ppo_loss, config=actor_config, distillation_config=distillation)

    def verl_init_model(self):  # stands in for verl's: it picks distillation_ppo_loss when distillation is on
        self.loss_fn = verl_loss
        self.actor = SimpleNamespace(engine=None, set_loss_fn=lambda fn: None)

    monkeypatch.setattr(ActorRolloutRefWorker, "init_model", verl_init_model)
    worker = DomainActorRolloutRefWorker.__new__(DomainActorRolloutRefWorker)
    worker.config, worker.role = OmegaConf.create({"domain": domain}), "actor_rollout"
    DomainActorRolloutRefWorker.init_model(worker)
    return worker, verl_loss


def _update_micro_batch() -> tuple[TensorDict, dict]:
    """A micro-batch of two responses (lengths 2, 3 after prompts of 3, 2) with a teacher's log-probs."""

    def nested(rows):
        return torch.nested.as_nested_tensor([torch.tensor(r, dtype=torch.float32) for r in rows], layout=torch.jagged)

    data = TensorDict(
        {
            "prompts": nested([[0.0] * 3, [0.0] * 2]),
            "responses": nested([[0.0] * 2, [0.0] * 3]),
            "response_mask": nested([[1.0] * 2, [1.0] * 3]),
            "old_log_probs": nested([[-1.0, -1.0], [-0.5, -0.5, -0.5]]),
            "advantages": nested([[1.5, 1.5], [-0.5, -0.5, -0.5]]),
            # teacher log-probs on every packed position (verl's layout for the estimator losses), [bsz, j, 1]
            "teacher_logprobs": torch.nested.as_nested_tensor(
                [torch.full((5, 1), -0.3), torch.full((5, 1), -2.0)], layout=torch.jagged
            ),
        },
        batch_size=[2],
    )
    tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=None, global_batch_size=None)
    log_probs = torch.tensor([0.0, 0.0, -0.75, -0.9, 0.0, 0.0, -0.6, -0.4, -0.5, 0.0])
    model_output = {"log_probs": torch.nested.nested_tensor_from_jagged(log_probs, torch.tensor([0, 5, 10]))}
    return data, model_output


def test_verl_distillation_terms_are_kept_when_only_validation_needs_the_worker(monkeypatch):
    # grpo / grpo_da / oc: DC and DR off, domain.validation on (the default) -> the worker still installs its loss
    # (the validation pass measures the views' JS); verl's distillation terms must stay in the update loss.
    off = {"constraint": {"enable": False}, "shaping": {"enable": False}}
    worker, verl_loss = _distillation_worker(monkeypatch, off)
    assert worker.loss_fn is not verl_loss  # the recipe's loss is installed ...
    data, model_output = _update_micro_batch()
    loss, metrics = worker.loss_fn(model_output=dict(model_output), data=data, dp_group=None)
    data, model_output = _update_micro_batch()
    expected, expected_metrics = verl_loss(model_output=dict(model_output), data=data, dp_group=None)
    assert torch.equal(loss, expected)  # ... and computes verl's distillation_ppo_loss, bit for bit
    assert "distillation/loss" in metrics and set(metrics) == set(expected_metrics)


def test_verl_top_k_distillation_processor_still_runs_beside_the_domain_view(monkeypatch):
    # verl's top-k distillation asks for the logits processor itself (distillation_use_topk): an unmarked pass goes
    # to verl's processor unchanged; a marked one gets verl's outputs and the domain fields.
    calls = []

    def verl_loss(*, student_logits=None, data=None, model_output=None, dp_group=None, config=None):
        calls.append("processor" if student_logits is not None else "loss")
        return {"distillation_losses": torch.zeros(1, 3)}

    from functools import partial

    from recipe.domain_grpo.keys import BASE_TOPK_KEY, DIVERGENCE_FIELD
    from recipe.domain_grpo.worker import DomainLoss

    loss = DomainLoss(partial(verl_loss, config=None), DomainConfig(), engine=None)
    loss.domain_fields = lambda student_logits, data: {DIVERGENCE_FIELD: torch.ones(1, 3)}
    data = _batch(distillation_use_topk=True)
    assert set(loss(student_logits=torch.zeros(1, 3, 5), data=data)) == {"distillation_losses"}
    tu.assign_non_tensor(data, **{PASS_KEY: "constraint", BASE_TOPK_KEY: True})
    assert set(loss(student_logits=torch.zeros(1, 3, 5), data=data)) == {"distillation_losses", DIVERGENCE_FIELD}
    tu.assign_non_tensor(data, **{BASE_TOPK_KEY: False})
    assert set(loss(student_logits=torch.zeros(1, 3, 5), data=data)) == {DIVERGENCE_FIELD}
    assert calls == ["processor", "processor"]


def test_mark_records_whether_verl_asked_for_the_processor():
    from recipe.domain_grpo.keys import BASE_TOPK_KEY

    worker = DomainActorRolloutRefWorker.__new__(DomainActorRolloutRefWorker)
    for verl_flag in (False, True):
        data = _batch(distillation_use_topk=verl_flag)
        worker._mark(data, "constraint")
        assert tu.get_non_tensor_data(data, "distillation_use_topk", None) is True
        assert tu.get_non_tensor_data(data, BASE_TOPK_KEY, None) is verl_flag


def test_no_view_share_counts_real_samples_without_any_view():
    from recipe.domain_grpo.worker import no_view_share

    # two views (mixture): sample 0 has view 0, sample 1 none, sample 2 view 1, sample 3 none but is verl's padding
    validity = [[True, False, False, False], [False, False, True, False]]
    real = [True, True, True, False]
    assert no_view_share(validity, real) == 1 / 3  # sample 1 of the 3 real ones
    assert no_view_share([], [True, True]) == 1.0  # no view at all
    assert no_view_share([[True]], [False]) == 0.0  # nothing real: 0, not a division by zero
