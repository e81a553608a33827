"""domain_grpo estimator: exact reduction to each verl base estimator, hand-computed shaping, loop reference.

Runs against whichever verl is importable: stock 0.9.1 (`make test`) or verl patched with upstream/ (the slow test
tests/upstream/test_patch_on_cpu.py reruns this file against a patched copy). Through verl's `compute_advantage`,
the D_i path is the one that verl has: the recipe's context on stock verl, `data.batch["domain_consistency"]` on
the patched one; the expected numbers are the same.
"""

import inspect
import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from verl import DataProto
from verl.trainer.ppo import core_algos
from verl.trainer.ppo.ray_trainer import compute_advantage

import verl_ext  # noqa: F401  (registers domain_grpo on stock verl)
from verl_ext.estimator import (
    check_base_estimator,
    compute_domain_grpo_outcome_advantage,
    domain_advantage_inputs,
    verl_has_domain_grpo,
)

PATCHED = verl_has_domain_grpo()
# verl's outcome estimators that compute_advantage calls with (token_level_rewards, response_mask, config, index).
BASES = ["grpo", "grpo_vectorized", "rloo", "rloo_vectorized", "reinforce_plus_plus", "reinforce_plus_plus_baseline"]
BASES += ["opo", "gpg", "grpo_passk", "remax"]
OWN_RETURNS = ("reinforce_plus_plus", "remax")  # their returns are reward sums (for a critic), not advantages


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


def _data_proto(rewards, mask, uid, base: str = "grpo") -> DataProto:
    tensors = {"token_level_rewards": rewards.clone(), "response_mask": mask.clone()}
    if base == "remax":  # the greedy response's reward, which compute_advantage hands on when present
        tensors["reward_baselines"] = torch.linspace(0.0, 2.0, len(uid))
    data = DataProto.from_dict(tensors=tensors)
    data.non_tensor_batch["uid"] = uid
    return data


def _algorithm(base: str, norm_by_std: bool = True):
    return OmegaConf.create({"adv_estimator": base, "norm_adv_by_std_in_grpo": norm_by_std, "gamma": 1.0})


def _verl(rewards, mask, uid, base: str, norm_by_std: bool = True) -> DataProto:
    """verl's own estimator `base` through verl's compute_advantage."""
    data = _data_proto(rewards, mask, uid, base)
    return compute_advantage(data, base, norm_adv_by_std_in_grpo=norm_by_std, config=_algorithm(base, norm_by_std))


def _domain_grpo(rewards, mask, uid, consistency, base: str = "grpo", norm_by_std: bool = True) -> DataProto:
    """domain_grpo through verl's compute_advantage, by the one path this verl has (None = shaping off)."""
    data = _data_proto(rewards, mask, uid, base)
    config = _algorithm("domain_grpo", norm_by_std)
    if PATCHED:  # verl's branch reads data.batch["domain_consistency"]; shaping off is D ≡ 0 there
        data.batch["domain_consistency"] = torch.zeros(len(uid)) if consistency is None else consistency
        config.domain_grpo_base_estimator = base
        return compute_advantage(data, "domain_grpo", norm_adv_by_std_in_grpo=norm_by_std, config=config)
    with domain_advantage_inputs(consistency=consistency, base_estimator=base):
        return compute_advantage(data, "domain_grpo", norm_adv_by_std_in_grpo=norm_by_std, config=config)


def test_exactly_one_domain_grpo_is_registered_per_verl():
    registered = core_algos.get_adv_estimator_fn("domain_grpo")
    if PATCHED:  # verl's own estimator; verl_ext registered nothing
        assert registered is core_algos.compute_domain_grpo_outcome_advantage
        assert registered.__module__ == "verl.trainer.ppo.core_algos"
    else:
        assert registered is compute_domain_grpo_outcome_advantage


@pytest.mark.parametrize("norm_by_std", [True, False])  # False: Dr.GRPO's advantages
@pytest.mark.parametrize("seed", [0, 1])
def test_reduces_to_verl_grpo_exactly_through_compute_advantage(norm_by_std, seed):
    rewards, mask, uid = _batch(seed)
    grpo = _verl(rewards, mask, uid, "grpo", norm_by_std)
    for consistency in (None, torch.zeros(len(uid))):  # shaping off, or D ≡ 0
        ours = _domain_grpo(rewards, mask, uid, consistency, "grpo", norm_by_std)
        assert torch.equal(ours.batch["advantages"], grpo.batch["advantages"])
        assert torch.equal(ours.batch["returns"], grpo.batch["returns"])


@pytest.mark.parametrize("base", BASES)
def test_reduces_to_each_verl_base_estimator_exactly(base):
    rewards, mask, uid = _batch(7)
    theirs = _verl(rewards, mask, uid, base)
    for consistency in (None, torch.zeros(len(uid))):
        ours = _domain_grpo(rewards, mask, uid, consistency, base)
        assert torch.equal(ours.batch["advantages"], theirs.batch["advantages"]), base
        assert torch.equal(ours.batch["returns"], theirs.batch["returns"]), base


@pytest.mark.parametrize("base", BASES)
def test_shapes_each_base_estimator_per_sample(base):
    rewards, mask, uid = _batch(8)
    d = torch.rand(len(uid), generator=torch.Generator().manual_seed(8))
    theirs = _verl(rewards, mask, uid, base)
    ours = _domain_grpo(rewards, mask, uid, d, base)
    torch.testing.assert_close(ours.batch["advantages"], theirs.batch["advantages"] * (1 - d).unsqueeze(-1))
    expected_returns = theirs.batch["returns"] if base in OWN_RETURNS else ours.batch["advantages"]
    assert torch.equal(ours.batch["returns"], expected_returns)


@pytest.mark.skipif(not PATCHED, reason="needs verl patched with upstream/ (tests/upstream/test_patch_on_cpu.py)")
@pytest.mark.parametrize("base", BASES)
def test_verl_ext_and_patched_verl_estimators_agree_bit_for_bit(base):
    rewards, mask, uid = _batch(9)
    d = torch.rand(len(uid), generator=torch.Generator().manual_seed(9))
    extra = {"reward_baselines": torch.linspace(0.0, 2.0, len(uid))} if base == "remax" else {}
    config = OmegaConf.create({"norm_adv_by_std_in_grpo": True, "gamma": 1.0, "domain_grpo_base_estimator": base})
    theirs = core_algos.compute_domain_grpo_outcome_advantage(
        rewards, mask, uid, config=config, domain_consistency=d, **extra
    )
    ours = compute_domain_grpo_outcome_advantage(
        rewards, mask, uid, config=config, domain_consistency=d, base_estimator=base, **extra
    )
    assert torch.equal(theirs[0], ours[0]) and torch.equal(theirs[1], ours[1])


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


def test_hand_computed_rloo_base():
    # One group, rewards (2, 1, 0): RLOO's A_i = r_i - mean of the others = (2 - 0.5, 1 - 1, 0 - 1.5) = (1.5, 0, -1.5).
    # D = (0.5, 0.5, 0.25) -> A^d = (0.75, 0, -1.125).
    rewards = torch.tensor([[2.0], [1.0], [0.0]])
    uid = np.array(["g", "g", "g"], dtype=object)
    adv, _ = compute_domain_grpo_outcome_advantage(
        rewards, torch.ones(3, 1), uid, domain_consistency=torch.tensor([0.5, 0.5, 0.25]), base_estimator="rloo"
    )
    torch.testing.assert_close(adv[:, 0], torch.tensor([0.75, 0.0, -1.125]))


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
    with domain_advantage_inputs(consistency=torch.zeros(len(uid)), base_estimator="rloo"):
        adv_kw, _ = compute_domain_grpo_outcome_advantage(
            rewards, mask, uid, domain_consistency=d, base_estimator="grpo"
        )
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


@pytest.mark.parametrize("base", ["gae", "gdpo", "optimal_token_baseline", "domain_grpo", "no_such_estimator"])
def test_bases_verl_cannot_shape_are_refused_with_the_key(base):
    with pytest.raises(ValueError, match="domain.shaping.base_estimator"):
        check_base_estimator(base)
    rewards, mask, uid = _batch(6)
    with pytest.raises(ValueError, match="domain.shaping.base_estimator"):
        compute_domain_grpo_outcome_advantage(
            rewards, mask, uid, domain_consistency=torch.zeros(len(uid)), base_estimator=base
        )


def test_context_reports_how_far_shaping_moved_the_advantages():
    rewards, mask, uid = _batch(6)
    with domain_advantage_inputs(consistency=torch.zeros(len(uid))) as inputs:
        compute_domain_grpo_outcome_advantage(rewards, mask, uid)
    assert inputs.stats["advantage_abs_change_max"] == 0.0
    with domain_advantage_inputs(consistency=torch.full((len(uid),), 0.5)) as inputs:
        adv, _ = compute_domain_grpo_outcome_advantage(rewards, mask, uid)
    # A^d = A / 2, so the largest change is half the largest |A^d| * 2 = max |A^d|
    assert inputs.stats["advantage_abs_change_max"] == pytest.approx(adv.abs().max().item(), rel=1e-6)


def _compute_advantage_handing_declared_fields(data: DataProto, estimator, config) -> torch.Tensor:
    """A compute_advantage in the calling convention of verl PR #7473 (not merged): `batch` and `non_tensor_batch`
    go to any estimator whose signature accepts them; nothing is named per estimator, no context is open."""
    parameters = inspect.signature(estimator).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    kwargs = {"token_level_rewards": data.batch["token_level_rewards"], "response_mask": data.batch["response_mask"]}
    kwargs.update(config=config, index=data.non_tensor_batch["uid"])
    for name, value in (("batch", data.batch), ("non_tensor_batch", data.non_tensor_batch)):
        if name in parameters or takes_any:
            kwargs[name] = value
    return estimator(**kwargs)[0]


def test_declares_the_per_sample_fields_pr7473_hands_over():
    parameters = inspect.signature(compute_domain_grpo_outcome_advantage).parameters
    assert {"batch", "non_tensor_batch"} <= set(parameters)


@pytest.mark.parametrize("where", ["batch", "non_tensor_batch"])
def test_reads_d_from_the_fields_pr7473_hands_over(where):
    # One group, rewards (1, 0, 0): mean 1/3, unbiased std sqrt(1/3) = 0.5774, so GRPO's A = (1.1547, -0.5774,
    # -0.5774); D = (0.5, 0, 1) gives A^d = (0.5774, -0.5774, 0) on every response token.
    rewards = torch.tensor([[0.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    uid = np.array(["p", "p", "p"], dtype=object)
    data = _data_proto(rewards, torch.ones(3, 2), uid)
    if where == "batch":
        data.batch["domain_consistency"] = torch.tensor([0.5, 0.0, 1.0])
    else:  # e.g. an agent loop's extra_fields: one Python float per sample in an object array
        data.non_tensor_batch["domain_consistency"] = np.array([0.5, 0.0, 1.0], dtype=object)
    adv = _compute_advantage_handing_declared_fields(data, compute_domain_grpo_outcome_advantage, _algorithm("grpo"))
    expected = torch.tensor([1 / math.sqrt(3), -1 / math.sqrt(3), 0.0]).unsqueeze(-1).expand(3, 2)
    torch.testing.assert_close(adv, expected, atol=1e-5, rtol=0)


def test_keyword_wins_over_fields_and_fields_win_over_context():
    rewards, mask, uid = _batch(12)
    n = len(uid)
    data = _data_proto(rewards, mask, uid)
    data.batch["domain_consistency"] = torch.full((n,), 0.5)
    fields = {"batch": data.batch, "non_tensor_batch": data.non_tensor_batch}
    half, _ = compute_domain_grpo_outcome_advantage(rewards, mask, uid, domain_consistency=torch.full((n,), 0.5))
    zero, _ = compute_domain_grpo_outcome_advantage(rewards, mask, uid, domain_consistency=torch.zeros(n))
    assert not torch.equal(half, zero)
    keyword, _ = compute_domain_grpo_outcome_advantage(rewards, mask, uid, domain_consistency=torch.zeros(n), **fields)
    assert torch.equal(keyword, zero)
    with domain_advantage_inputs(consistency=torch.zeros(n)):
        from_fields, _ = compute_domain_grpo_outcome_advantage(rewards, mask, uid, **fields)
    assert torch.equal(from_fields, half)


def test_hands_the_fields_on_only_to_a_base_that_accepts_them(monkeypatch):
    rewards, mask, uid = _batch(13)
    seen = {}

    def strict_base(token_level_rewards, response_mask, config=None, index=None):  # no **kwargs
        return token_level_rewards, token_level_rewards

    def field_reading_base(token_level_rewards, response_mask, config=None, index=None, non_tensor_batch=None):
        seen["non_tensor_batch"] = non_tensor_batch
        return token_level_rewards, token_level_rewards

    monkeypatch.setitem(core_algos.ADV_ESTIMATOR_REGISTRY, "strict_base", strict_base)
    monkeypatch.setitem(core_algos.ADV_ESTIMATOR_REGISTRY, "field_reading_base", field_reading_base)
    data = _data_proto(rewards, mask, uid)
    data.batch["domain_consistency"] = torch.zeros(len(uid))
    for base in ("strict_base", "field_reading_base"):
        adv, _ = compute_domain_grpo_outcome_advantage(
            rewards, mask, uid, base_estimator=base, batch=data.batch, non_tensor_batch=data.non_tensor_batch
        )
        assert torch.equal(adv, rewards)  # D = 0: the base's own result
    assert seen["non_tensor_batch"] is data.non_tensor_batch
