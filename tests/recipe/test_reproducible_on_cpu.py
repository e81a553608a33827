"""Seeded runs reproduce on CPU: two identical short runs of verl's loop give the same metrics and weights (issue 19.5).

`stand_in=cpu_tiny` turns on `domain_recipe.deterministic`: every rollout request seeded from (rollout.seed, row,
response of the group, step) by the recipe's agent loop, batches in dispatch order (not in the order TransferQueue
received the trajectories), and verl's `full_determinism` for the actor/ref engines. Before, the CPU `hf` rollout
served unseeded requests from one shared generator in the order the asynchronous agent loop happened to send them, so
`method=grpo` (then on verl's own agent loop, which sends no seed) sampled other responses on every run. Two runs of
`method=grpo`, two steps each, about 4 minutes on 2 cores.
"""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

STEPS = 2
# Wall-clock and memory readings differ between any two runs; everything else must not.
NOT_REPRODUCIBLE = ("timing_s/", "timing_per_token_ms/", "perf/", "actor/perf/")


@pytest.fixture(scope="module")
def two_identical_runs(tmp_path_factory) -> list[tuple[dict, dict[str, torch.Tensor]]]:
    """[(metrics {step: {key: value}}, final HF weights)] of two runs with the same seed and config."""
    from conftest import _run_tiny_training

    runs = []
    for name in ("first", "second"):
        tmp_path = tmp_path_factory.mktemp(name)
        overrides = [
            "method=grpo",
            f"trainer.save_freq={STEPS}",
            "actor_rollout_ref.actor.checkpoint.save_contents=[model,hf_model]",
        ]
        result, metrics = _run_tiny_training(tmp_path, STEPS, overrides)
        assert result.returncode == 0, result.stdout[-6000:]
        final = tmp_path / "ckpt" / f"global_step_{STEPS}" / "actor" / "huggingface" / "model.safetensors"
        runs.append((metrics, load_file(final)))
    return runs


def _reproducible(values: dict) -> dict:
    return {key: value for key, value in values.items() if not key.startswith(NOT_REPRODUCIBLE)}


@pytest.mark.slow
def test_every_step_metric_is_identical(two_identical_runs) -> None:
    (first, _), (second, _) = two_identical_runs
    assert sorted(first) == sorted(second) == list(range(1, STEPS + 1))
    for step in first:
        a, b = _reproducible(first[step]), _reproducible(second[step])
        assert sorted(a) == sorted(b)
        differing = {key: (a[key], b[key]) for key in a if a[key] != b[key]}
        assert not differing, f"step {step}: {differing}"


@pytest.mark.slow
def test_the_groups_are_sampled_not_copied(two_identical_runs) -> None:
    # Seeding every request alike would reproduce too, with the n responses of a prompt identical: no GRPO signal.
    (first, _), _ = two_identical_runs
    assert any(values["critic/advantages/max"] > 0 for values in first.values())
    assert all(math.isfinite(values["actor/grad_norm"]) for values in first.values())


@pytest.mark.slow
def test_final_weights_are_identical(two_identical_runs) -> None:
    (_, first), (_, second) = two_identical_runs
    assert sorted(first) == sorted(second)
    differing = [name for name in first if not torch.equal(first[name], second[name])]
    assert not differing, differing[:5]


@pytest.mark.parametrize(("overrides", "expected"), [([], False), (["stand_in=cpu_tiny"], True)])
def test_deterministic_sets_the_engines_switches(overrides: list[str], expected: bool) -> None:
    # verl's engine switch for the actor and the reference policy. Not verl's rollout switch: in verl 0.9.1 it names
    # every request of the TransferQueue path `det-0` (one vLLM request id for all, all routed to one replica).
    from launch_helpers import compose_run

    config = compose_run(overrides)
    assert config.domain_recipe.deterministic is expected
    ref = config.actor_rollout_ref
    assert ref.actor.fsdp_config.full_determinism is expected and ref.ref.fsdp_config.full_determinism is expected
    assert ref.rollout.full_determinism is False
    assert ref.rollout.agent.default_agent_loop == "domain_single_turn_agent"


def test_deterministic_seeds_every_request_unless_a_rollout_seed_is_given() -> None:
    from launch_helpers import compose_run

    from recipe.domain_grpo.augment import rollout_seed_from_config

    assert rollout_seed_from_config(compose_run(["method=grpo"])) is None  # verl's default: the engine's randomness
    # deterministic, no rollout_seed: rollout.seed, drawn per request (verl's vLLM server gives all requests one seed)
    assert rollout_seed_from_config(compose_run(["method=grpo", "stand_in=cpu_tiny"])) == 42
    on = ["domain_recipe.deterministic=true", "actor_rollout_ref.rollout.seed=3"]
    assert rollout_seed_from_config(compose_run(on)) == 3
    assert rollout_seed_from_config(compose_run([*on, "domain_recipe.rollout_seed=9"])) == 9


def test_deterministic_must_be_a_bool() -> None:
    from launch_helpers import compose_run

    from recipe.domain_grpo.augment import AgentExtrasConfigError, extras_from_config

    with pytest.raises(AgentExtrasConfigError, match="domain_recipe.deterministic='yes' must be true or false"):
        extras_from_config(compose_run(["domain_recipe.deterministic=yes"]))


def _replay_buffer_with(prompts: list[str], finished: list[str]):
    """verl's sync ReplayBuffer holding `prompts` (dispatch order) whose trajectories `finished` in that order."""
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

    buffer = ReplayBuffer("sync", {}, None, "drop", {})
    buffer.prompt_global_steps["train"] = {uid: 3 for uid in prompts}
    buffer.partitions["train"] = {key: {"status": "finished"} for key in finished}
    return buffer


def test_batches_come_in_dispatch_order_not_completion_order(monkeypatch) -> None:
    import verl.trainer.ppo.v1.replay_buffer as replay_buffer

    from recipe.common.replay_order import in_dispatch_order

    monkeypatch.setattr(replay_buffer.tq, "kv_clear", lambda **kwargs: None)
    prompts = ["9f-b", "1a-a"]  # dispatched in this order (uids are random uuid4s: their own order means nothing)
    finished = ["1a-a_1_0", "9f-b_2_0", "9f-b_0_0", "1a-a_0_0", "9f-b_1_0"]  # as the agent loops happened to finish
    plain = _replay_buffer_with(prompts, finished)
    selected, snapshot, _ = plain._select_prompt_uids("train", set(prompts), 2)
    assert plain._materialize_batch("train", selected, snapshot).keys == finished  # verl: completion order
    ordered = in_dispatch_order(_replay_buffer_with(prompts, finished))
    selected, snapshot, _ = ordered._select_prompt_uids("train", set(prompts), 2)
    assert selected == prompts
    batch = ordered._materialize_batch("train", selected, snapshot)
    assert batch.keys == ["9f-b_0_0", "9f-b_1_0", "9f-b_2_0", "1a-a_0_0", "1a-a_1_0"]
    assert type(ordered).__name__ == "DispatchOrderReplayBuffer" and in_dispatch_order(ordered) is ordered


@pytest.mark.parametrize(
    ("overrides", "wrapped"), [(["method=grpo"], False), (["method=grpo", "stand_in=cpu_tiny"], True)]
)
def test_the_recipe_trainer_takes_batches_in_dispatch_order_when_deterministic(overrides, wrapped) -> None:
    from launch_helpers import compose_run

    from recipe.common.worker_hook import resolve_trainer_cls

    trainer_cls = resolve_trainer_cls(compose_run(overrides))
    assert trainer_cls.__name__.endswith("InDispatchOrder") is wrapped
