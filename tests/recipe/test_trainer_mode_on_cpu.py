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
    # Two samples with 2 prompt + 2 response tokens each. Position i holds the divergence of the prediction of token
    # i + 1, so the response tokens' values sit at positions 1 and 2: sample 0 -> (0.2, 0.3), mean 0.25;
    # sample 1 -> (0.5, 1.0), mean 0.75.
    per_token = torch.nested.nested_tensor(
        [torch.tensor([9.0, 0.2, 0.3, 9.0]), torch.tensor([9.0, 0.5, 1.0, 9.0])], layout=torch.jagged
    )
    response_mask = torch.nested.nested_tensor([torch.ones(2), torch.ones(2)], layout=torch.jagged)
    seen = {}

    def fake_get(keys, partition_id, select_fields):
        assert select_fields == ["domain_divergence", "response_mask", "domain_transform_mask"]
        assert keys == ["a_0_0", "a_1_0"]
        return {
            "domain_divergence": per_token,
            "response_mask": response_mask,
            "domain_transform_mask": torch.tensor([1, 1]),
        }

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
        assert metrics == {
            "domain/js_mean": 0.5,
            "domain/js_min": 0.25,
            "domain/js_max": 0.75,
            "domain/consistency_weight_mean": 0.5,
            "domain/transform_count/rot90": 2,  # mask 1 = bit 0 = domain.transforms.names[0]
        }
    else:
        assert seen["inputs"].consistency is None and metrics == {}
    assert _INPUTS.get() is None  # the context is closed afterwards


def test_keeps_verls_sync_semantics():
    trainer = object.__new__(trainer_mod.DomainGRPOTrainer)
    trainer.trainer_mode = "domain_grpo"  # what PPOTrainer.__init__ assigns
    assert trainer.trainer_mode == "sync"
