"""The domain_grpo trainer mode: registered with verl, and hands TransferQueue's D_i to the estimator.

Runs against whichever verl is importable: stock 0.9.1 (`make test`: the recipe's context path) or verl patched with
upstream/ (rerun by tests/upstream/test_patch_on_cpu.py: verl's own compute_advantage path). The end-to-end test
drives verl's real `_compute_advantage` over an in-memory TransferQueue and expects the same advantages on both.
"""

import math
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf
from tensordict import TensorDict
from tensordict.tensorclass import NonTensorStack
from transfer_queue import KVBatchMeta
from verl.trainer.ppo.v1.trainer_base import get_trainer_cls
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

import verl_ext  # noqa: F401  (registers domain_grpo on stock verl)
from recipe.domain_grpo import trainer as trainer_mod
from verl_ext.config import DomainConfigError
from verl_ext.estimator import _INPUTS, verl_has_domain_grpo

PATCHED = verl_has_domain_grpo()


def _nested(rows):
    return torch.nested.as_nested_tensor([torch.tensor(r, dtype=torch.float32) for r in rows], layout=torch.jagged)


class FakeTransferQueue:
    """The two TransferQueue calls the trainer makes, over one in-memory TensorDict (keys always in batch order)."""

    def __init__(self, fields: TensorDict) -> None:
        self.store = fields

    def kv_batch_get(self, keys, partition_id, select_fields):
        return self.store.select(*[name for name in select_fields if name in self.store.keys()])

    def kv_batch_put(self, keys, partition_id, fields, tags=None):
        self.store.update(fields)
        return KVBatchMeta(keys=keys, tags=[{}] * len(keys), partition_id=partition_id)


# every batch below is complete: 2 responses per prompt (recipe/lost_rollouts 0)
NO_LOSS = {"recipe/lost_rollouts": 0, "recipe/incomplete_groups": 0}


def _trainer(config: dict) -> trainer_mod.DomainGRPOTrainer:
    trainer = object.__new__(trainer_mod.DomainGRPOTrainer)
    trainer.config = OmegaConf.merge({"actor_rollout_ref": {"rollout": {"n": 2}}}, config)
    return trainer


def test_registered_under_its_mode_name():
    assert get_trainer_cls("domain_grpo") is trainer_mod.DomainGRPOTrainer
    assert issubclass(trainer_mod.DomainGRPOTrainer, PPOTrainerSync)


# Two prompts x two responses, prompt length 2. Position i of the per-token divergence scores the prediction of token
# i + 1, so a sample's response values sit at positions 1 .. len(response); the 9s must be ignored.
#   sample 0: response (0.4, 0.6) -> D = 0.5;  sample 1: (0, 0) -> 0;  sample 2: (0.25) -> 0.25;  sample 3: (1, 1) -> 1
# Outcome rewards (last response token): group p0 = (1, 0), group p1 = (2, 1).
#   grpo: each group's A = (+-0.5) / std 0.7071 = (+0.7071, -0.7071)    rloo: A_i = r_i - r_other = (+1, -1)
#   A^d = (1 - D) A:  grpo (0.3536, -0.7071, 0.5303, 0)    rloo (0.5, -1, 0.75, 0)
D = [0.5, 0.0, 0.25, 1.0]
A = 1 / math.sqrt(2)
EXPECTED = {
    ("grpo", True): [0.5 * A, -A, 0.75 * A, 0.0],
    ("grpo", False): [A, -A, A, -A],
    ("rloo", True): [0.5, -1.0, 0.75, 0.0],
    ("rloo", False): [1.0, -1.0, 1.0, -1.0],
}


def _tq_fields() -> TensorDict:
    return TensorDict(
        {
            "uid": NonTensorStack("p0", "p0", "p1", "p1"),
            "response_mask": _nested([[1, 1], [1, 1], [1], [1, 1]]),
            "rm_scores": _nested([[0, 1], [0, 0], [2], [0, 1]]),
            "domain_divergence": _nested([[9, 0.4, 0.6, 9], [9, 0, 0, 9], [9, 0.25, 9], [9, 1, 1, 9]]),
            "domain_scope": _nested([[0, 1, 1, 0], [0, 1, 1, 0], [0, 1, 0], [0, 1, 1, 0]]),  # the response positions
            "domain_transform_mask": torch.tensor([1, 1, 2, 2]),  # one view each, two transforms
        },
        batch_size=[4],
    )


@pytest.mark.parametrize("base", ["grpo", "rloo"])
@pytest.mark.parametrize("shaping", [True, False])
def test_domain_grpo_advantages_through_verls_own_compute_advantage(monkeypatch, base, shaping):
    tq = FakeTransferQueue(_tq_fields())
    monkeypatch.setattr(trainer_mod.tq, "kv_batch_get", tq.kv_batch_get)  # the `transfer_queue` module verl uses too
    monkeypatch.setattr(trainer_mod.tq, "kv_batch_put", tq.kv_batch_put)
    opened = []
    real_context = trainer_mod.domain_advantage_inputs
    monkeypatch.setattr(trainer_mod, "domain_advantage_inputs", lambda **kw: opened.append(kw) or real_context(**kw))
    trainer = _trainer(
        {
            "algorithm": {"adv_estimator": "domain_grpo", "use_kl_in_reward": False, "gamma": 1.0, "lam": 1.0},
            "actor_rollout_ref": {"rollout": {"n": 2}},
            "domain": {"shaping": {"enable": shaping, "base_estimator": base}},
        }
    )
    trainer_mod.prepare_algorithm_config(trainer.config)  # what __init__ does at start-up
    batch = KVBatchMeta(keys=["p0_0_0", "p0_1_0", "p1_0_0", "p1_1_0"], tags=[{}] * 4, partition_id="train")
    metrics = {}
    trainer._compute_advantage(batch, metrics)

    advantages = [row[0].item() for row in tq.store["advantages"].unbind()]  # constant over each response
    assert advantages == pytest.approx(EXPECTED[(base, shaping)], abs=1e-5)
    if shaping:
        assert metrics["domain/js_mean"] == pytest.approx(sum(D) / 4)
        counts = [v for k, v in metrics.items() if k.startswith("domain/transform_count/")]
        assert sorted(counts) == [2, 2]  # masks 1, 1, 2, 2: two samples per transform (names: worker's bit order)
    if PATCHED:  # exactly one path: D_i went through TransferQueue into verl's compute_advantage, no context opened
        assert not opened
        assert tq.store["domain_consistency"].tolist() == pytest.approx(D if shaping else [0.0] * 4)
        assert trainer.config.algorithm.domain_grpo_base_estimator == base
        assert "domain/advantage_abs_change_max" not in metrics  # verl's estimator reports no stats
    else:  # the recipe's context around verl's unchanged _compute_advantage; verl's TransferQueue has no such field
        assert len(opened) == 1 and opened[0]["base_estimator"] == base
        assert "domain_consistency" not in tq.store.keys()
        assert "domain_grpo_base_estimator" not in trainer.config.algorithm
        # max_i |A_i^d - A_i| = max_i D_i |A_i|: sample 3 (D = 1) with |A| = 0.7071 (grpo) or 1 (rloo)
        change = max(d * abs(a) for d, a in zip(D, EXPECTED[(base, False)])) if shaping else 0.0
        assert metrics["domain/advantage_abs_change_max"] == pytest.approx(change, abs=1e-5)
    assert _INPUTS.get() is None  # no context left open


def test_other_estimators_pass_through_untouched(monkeypatch):
    tq = FakeTransferQueue(_tq_fields())
    monkeypatch.setattr(trainer_mod.tq, "kv_batch_get", tq.kv_batch_get)
    monkeypatch.setattr(trainer_mod.tq, "kv_batch_put", tq.kv_batch_put)
    trainer = _trainer(
        {
            "algorithm": {"adv_estimator": "grpo", "use_kl_in_reward": False, "gamma": 1.0, "lam": 1.0},
            "actor_rollout_ref": {"rollout": {"n": 2}},
            "domain": {"shaping": {"enable": False}},
        }
    )
    batch = KVBatchMeta(keys=["p0_0_0", "p0_1_0", "p1_0_0", "p1_1_0"], tags=[{}] * 4, partition_id="train")
    trainer._compute_advantage(batch, {})
    advantages = [row[0].item() for row in tq.store["advantages"].unbind()]
    assert advantages == pytest.approx(EXPECTED[("grpo", False)], abs=1e-5)
    assert "domain_consistency" not in tq.store.keys()


@pytest.mark.skipif(PATCHED, reason="stock-verl path: the context around verl's _compute_advantage")
@pytest.mark.parametrize("shaping", [True, False])
@pytest.mark.parametrize("answer_scope", [False, True])
def test_compute_advantage_opens_the_context_with_tq_field(monkeypatch, shaping, answer_scope):
    # Two samples with 2 prompt + 2 response tokens each. Position i holds the divergence of the prediction of token
    # i + 1, so the response tokens' values sit at positions 1 and 2: sample 0 -> (0.2, 0.3), mean 0.25;
    # sample 1 -> (0.5, 1.0), mean 0.75. Answer scope: sample 0's answer is its second token only -> D = 0.3;
    # sample 1 has no well-formed answer (empty scope) -> D = 0, counted in domain/empty_scope_count.
    per_token = torch.nested.nested_tensor(
        [torch.tensor([9.0, 0.2, 0.3, 9.0]), torch.tensor([9.0, 0.5, 1.0, 9.0])], layout=torch.jagged
    )
    rows = [[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]] if answer_scope else [[0.0, 1.0, 1.0, 0.0]] * 2
    scope = torch.nested.nested_tensor([torch.tensor(r) for r in rows], layout=torch.jagged)
    response_mask = torch.nested.nested_tensor([torch.ones(2), torch.ones(2)], layout=torch.jagged)
    seen = {}

    def fake_get(keys, partition_id, select_fields):
        assert select_fields == ["domain_divergence", "domain_scope", "response_mask", "domain_transform_mask"]
        assert keys == ["a_0_0", "a_1_0"]
        return {
            "domain_divergence": per_token,
            "domain_scope": scope,
            "response_mask": response_mask,
            "domain_transform_mask": torch.tensor([1, 1]),
        }

    def fake_parent(self, batch, metrics):  # stands in for verl's _compute_advantage; records what it would see
        seen["inputs"] = _INPUTS.get()
        return batch

    monkeypatch.setattr(trainer_mod.tq, "kv_batch_get", fake_get)
    monkeypatch.setattr(PPOTrainerSync, "_compute_advantage", fake_parent)
    trainer = _trainer({"algorithm": {"adv_estimator": "domain_grpo"}, "domain": {"shaping": {"enable": shaping}}})
    batch = SimpleNamespace(keys=["a_0_0", "a_1_0"], partition_id="train")
    metrics = {}
    assert trainer._compute_advantage(batch, metrics) is batch
    if shaping and answer_scope:
        assert seen["inputs"].consistency.tolist() == pytest.approx([0.3, 0.0])
        assert metrics["domain/empty_scope_count"] == 1
    elif shaping:
        assert seen["inputs"].consistency.tolist() == [0.25, 0.75]
        # mean D = 0.5, mean (1 - D) = 0.5
        assert metrics == {
            "domain/js_mean": 0.5,
            "domain/js_min": 0.25,
            "domain/js_max": 0.75,
            "domain/consistency_weight_mean": 0.5,
            "domain/transform_count/rot90": 2,  # mask 1 = bit 0 = domain.transforms.names[0]
            "domain/empty_scope_count": 0,
            "domain/samples_without_view": 0,
            **NO_LOSS,
        }
    else:
        assert seen["inputs"].consistency is None and metrics == NO_LOSS
    assert seen["inputs"].base_estimator == "grpo"
    assert _INPUTS.get() is None  # the context is closed afterwards


@pytest.mark.parametrize(
    ("base", "match"), [("no_such_estimator", "not a registered verl estimator"), ("gae", "cannot be shaped")]
)
def test_start_up_refuses_a_base_estimator_verl_cannot_run(base, match):
    config = OmegaConf.create(
        {"algorithm": {"adv_estimator": "domain_grpo"}, "domain": {"shaping": {"base_estimator": base}}}
    )
    with pytest.raises(DomainConfigError, match=rf"domain.shaping.base_estimator='{base}' .*{match}"):
        trainer_mod.prepare_algorithm_config(config)


@pytest.mark.skipif(not PATCHED, reason="needs verl patched with upstream/ (tests/upstream/test_patch_on_cpu.py)")
def test_patched_verl_key_must_agree_with_the_recipe_key():
    config = OmegaConf.create(
        {
            "algorithm": {"adv_estimator": "domain_grpo", "domain_grpo_base_estimator": "rloo"},
            "domain": {"shaping": {"base_estimator": "grpo"}},
        }
    )
    with pytest.raises(DomainConfigError, match="algorithm.domain_grpo_base_estimator='rloo' differs"):
        trainer_mod.prepare_algorithm_config(config)


def test_keeps_verls_sync_semantics():
    trainer = object.__new__(trainer_mod.DomainGRPOTrainer)
    trainer.trainer_mode = "domain_grpo"  # what PPOTrainer.__init__ assigns
    assert trainer.trainer_mode == "sync"


def test_samples_without_view_counts_mask_zero_and_skips_padding():
    import torch

    from recipe.domain_grpo.trainer import samples_without_view

    masks = torch.tensor([1, 0, 4, 0, 0])  # samples 1, 3, 4 got no view
    tags = [{}, {}, {}, {"is_padding": True}, {}]  # sample 3 is verl's padding: not counted
    assert samples_without_view(masks) == {"domain/samples_without_view": 3}
    assert samples_without_view(masks, tags) == {"domain/samples_without_view": 2}
