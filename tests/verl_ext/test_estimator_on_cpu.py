"""domain_grpo estimator: exact reduction to verl's grpo, hand-computed shaping, loop reference, permutation."""

import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from verl import DataProto
from verl.trainer.ppo.ray_trainer import compute_advantage

import verl_ext  # noqa: F401  (registers domain_grpo)
from verl_ext.estimator import compute_domain_grpo_outcome_advantage, domain_advantage_inputs


def _batch(seed: int, groups: int = 4, group_size: int = 5, length: int = 6):
    gen = torch.Generator().manual_seed(seed)
    batch = groups * group_size
    mask = (torch.rand(batch, length, generator=gen) < 0.8).float()
    mask[:, 0] = 1.0
    rewards = torch.zeros(batch, length)
    last = mask.cumsum(-1).argmax(-1)  # outcome reward on the last response token, as verl's reward loop does
    rewards[torch.arange(batch), last] = torch.randint(0, 3, (batch,), generator=gen).float()
    uid = np.array([f"prompt-{i // group_size}" for i in range(batch)], dtype=object)
    return rewards, mask, uid


def _data_proto(rewards, mask, uid) -> DataProto:
    data = DataProto.from_dict(tensors={"token_level_rewards": rewards, "response_mask": mask})
    data.non_tensor_batch["uid"] = uid
    return data


@pytest.mark.parametrize("norm_by_std", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_reduces_to_verl_grpo_exactly_through_compute_advantage(norm_by_std, seed):
    rewards, mask, uid = _batch(seed)
    config = OmegaConf.create({"norm_adv_by_std_in_grpo": norm_by_std})
    grpo = compute_advantage(_data_proto(rewards, mask, uid), "grpo", norm_adv_by_std_in_grpo=norm_by_std)
    for consistency in (None, torch.zeros(len(uid))):  # shaping off, or D ≡ 0
        with domain_advantage_inputs(consistency=consistency):
            ours = compute_advantage(_data_proto(rewards, mask, uid), "domain_grpo", config=config)
        assert torch.equal(ours.batch["advantages"], grpo.batch["advantages"])
        assert torch.equal(ours.batch["returns"], grpo.batch["returns"])


def test_hand_computed_group():
    # One group, rewards (1, 0, 0): mean 1/3, unbiased std sqrt(((2/3)^2 + 2 (1/3)^2) / 2) = sqrt(1/3) = 0.57735.
    # A = (2/3, -1/3, -1/3) / 0.57735 = (1.1547, -0.57735, -0.57735)   (epsilon 1e-6 is negligible at 1e-5)
    # D = (0.5, 0.0, 1.0) -> A^d = (0.57735, -0.57735, 0.0): the consistent sample keeps its full negative advantage.
    rewards = torch.tensor([[0.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    mask = torch.ones(3, 2)
    uid = np.array(["g", "g", "g"], dtype=object)
    adv, ret = compute_domain_grpo_outcome_advantage(
        rewards, mask, uid, domain_consistency=torch.tensor([0.5, 0.0, 1.0])
    )
    s = math.sqrt(1 / 3)
    expected = torch.tensor([0.5 * (2 / 3) / s, -(1 / 3) / s, 0.0])
    torch.testing.assert_close(adv[:, 0], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(adv[:, 1], expected, atol=1e-5, rtol=0)
    assert torch.equal(adv, ret)


@pytest.mark.parametrize("seed", range(3))
def test_matches_float64_loop_reference(seed):
    rewards, mask, uid = _batch(seed)
    d = torch.rand(len(uid), generator=torch.Generator().manual_seed(seed))
    adv, _ = compute_domain_grpo_outcome_advantage(rewards, mask, uid, domain_consistency=d)
    scores = rewards.double().sum(-1)
    for i in range(len(uid)):
        group = [j for j in range(len(uid)) if uid[j] == uid[i]]
        g = scores[group]
        a_i = (scores[i] - g.mean()) / (g.std() + 1e-6)
        expected = (1 - d[i].double()) * a_i * mask[i].double()
        torch.testing.assert_close(adv[i].double(), expected, atol=1e-5, rtol=1e-5)


def test_permuting_within_and_across_groups_permutes_outputs():
    rewards, mask, uid = _batch(3)
    d = torch.rand(len(uid), generator=torch.Generator().manual_seed(9))
    adv, _ = compute_domain_grpo_outcome_advantage(rewards, mask, uid, domain_consistency=d)
    perm = torch.randperm(len(uid), generator=torch.Generator().manual_seed(10))
    adv_p, _ = compute_domain_grpo_outcome_advantage(
        rewards[perm], mask[perm], uid[perm.numpy()], domain_consistency=d[perm]
    )
    torch.testing.assert_close(adv_p, adv[perm], atol=1e-6, rtol=1e-6)


def test_explicit_keyword_wins_over_context():
    rewards, mask, uid = _batch(4)
    d = torch.full((len(uid),), 0.25)
    with domain_advantage_inputs(consistency=torch.zeros(len(uid))):
        adv_kw, _ = compute_domain_grpo_outcome_advantage(rewards, mask, uid, domain_consistency=d)
    adv_grpo, _ = compute_domain_grpo_outcome_advantage(rewards, mask, uid, domain_consistency=torch.zeros(len(uid)))
    torch.testing.assert_close(adv_kw, 0.75 * adv_grpo)


def test_missing_or_bad_consistency_fails_loudly():
    rewards, mask, uid = _batch(5)
    with pytest.raises(RuntimeError, match="domain_grpo trainer mode"):
        compute_domain_grpo_outcome_advantage(rewards, mask, uid)
    n = len(uid)
    for bad, match in (
        (torch.full((n,), 1.5), r"\[0, 1\]"),
        (torch.full((n,), -0.1), r"\[0, 1\]"),
        (torch.full((n,), math.nan), "finite"),
        (torch.zeros(n - 1), "batch of"),
    ):
        with pytest.raises(ValueError, match=match):
            compute_domain_grpo_outcome_advantage(rewards, mask, uid, domain_consistency=bad)


def test_context_reports_how_far_shaping_moved_the_advantages():
    rewards, mask, uid = _batch(6)
    with domain_advantage_inputs(consistency=torch.zeros(len(uid))) as inputs:
        compute_domain_grpo_outcome_advantage(rewards, mask, uid)
    assert inputs.stats["advantage_abs_change_max"] == 0.0
    with domain_advantage_inputs(consistency=torch.full((len(uid),), 0.5)) as inputs:
        adv, _ = compute_domain_grpo_outcome_advantage(rewards, mask, uid)
    # A^d = A / 2, so the largest change is half the largest |A^d| * 2 = max |A^d|
    assert inputs.stats["advantage_abs_change_max"] == pytest.approx(adv.abs().max().item(), rel=1e-6)
