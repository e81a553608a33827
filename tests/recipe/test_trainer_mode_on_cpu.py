"""The domain_grpo trainer mode: registered with verl, and hands TransferQueue's D_i to the estimator."""

from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf
from verl.trainer.ppo.v1.trainer_base import get_trainer_cls
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

from recipe.domain_grpo import trainer as trainer_mod
from verl_ext.estimator import _INPUTS


def test_registered_under_its_mode_name():
    assert get_trainer_cls("domain_grpo") is trainer_mod.DomainGRPOTrainer
    assert issubclass(trainer_mod.DomainGRPOTrainer, PPOTrainerSync)


@pytest.mark.parametrize("shaping", [True, False])
def test_compute_advantage_opens_the_context_with_tq_field(monkeypatch, shaping):
    d = torch.tensor([[0.25], [0.75]])
    seen = {}

    def fake_get(keys, partition_id, select_fields):
        assert select_fields == ["domain_consistency"] and keys == ["a_0_0", "a_1_0"]
        return {"domain_consistency": d}

    def fake_parent(self, batch, metrics):  # stands in for verl's _compute_advantage; records what it would see
        seen["inputs"] = _INPUTS.get()
        return batch

    monkeypatch.setattr(trainer_mod.tq, "kv_batch_get", fake_get)
    monkeypatch.setattr(PPOTrainerSync, "_compute_advantage", fake_parent)
    trainer = object.__new__(trainer_mod.DomainGRPOTrainer)
    trainer.config = OmegaConf.create(
        {"algorithm": {"adv_estimator": "domain_grpo"}, "domain": {"shaping": {"enable": shaping}}}
    )
    batch = SimpleNamespace(keys=["a_0_0", "a_1_0"], partition_id="train")
    metrics = {}
    assert trainer._compute_advantage(batch, metrics) is batch
    if shaping:
        assert seen["inputs"].consistency.tolist() == [0.25, 0.75]
        # mean D = 0.5, mean (1 - D) = 0.5
        assert metrics == {"domain/js_mean": 0.5, "domain/consistency_weight_mean": 0.5}
    else:
        assert seen["inputs"].consistency is None and metrics == {}
    assert _INPUTS.get() is None  # the context is closed afterwards


def test_keeps_verls_sync_semantics():
    trainer = object.__new__(trainer_mod.DomainGRPOTrainer)
    trainer.trainer_mode = "domain_grpo"  # what PPOTrainer.__init__ assigns
    assert trainer.trainer_mode == "sync"
