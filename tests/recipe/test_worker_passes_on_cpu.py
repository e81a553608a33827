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

from recipe.domain_grpo.worker import PASS_KEY, TRANSFORM_MASK_KEY, DomainActorRolloutRefWorker, is_consistency_pass
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
