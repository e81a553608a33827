"""The shared entry point: verl's own TaskRunnerV1.run runs (no copy), with the configured worker class in the mode."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

CONFIG_DIR = Path(__file__).resolve().parents[3] / "recipe" / "domain_grpo" / "config"


def _compose(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(config_name="domain_grpo_trainer", overrides=list(overrides))


def test_task_runner_hands_verls_own_run_the_hooked_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """The recipe TaskRunner's `run` is verl's `TaskRunnerV1.run` (not a copy) seeing the mode with our worker."""
    from verl.trainer.main_ppo import TaskRunnerV1
    from verl.trainer.ppo.v1 import PPOTrainerColocateAsync, get_trainer_cls
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY

    from recipe.common.entry import task_runner_class

    runner_cls = task_runner_class().__ray_actor_class__
    assert issubclass(runner_cls, TaskRunnerV1.__ray_actor_class__)
    assert set(vars(runner_cls)) & {"init_agent_loop_manager", "__init__"} == set()  # only `run` is overridden
    seen = {}

    def verls_run(self, config):  # stands in for verl's TaskRunnerV1.run: what would it build?
        seen["trainer_cls"] = get_trainer_cls(config.trainer.v1.trainer_mode)

    monkeypatch.setattr(TaskRunnerV1.__ray_actor_class__, "run", verls_run)
    monkeypatch.setitem(TRAINER_REGISTRY, "colocate_async", PPOTrainerColocateAsync)  # restored after the test
    config = _compose(
        "stand_in=cpu_tiny",
        "actor_rollout_ref.model.path=/m",
        "trainer.v1.trainer_mode=colocate_async",
        "domain_recipe.actor_rollout_ref_worker=verl.experimental.separation.engine_workers.DetachActorWorker",
        "domain_recipe.deterministic=false",  # the worker hook alone (the dispatch-order wrapper: test_reproducible)
    )
    runner = object.__new__(runner_cls)
    runner_cls.run(runner, config)
    hooked = seen["trainer_cls"]
    assert issubclass(hooked, PPOTrainerColocateAsync) and hooked is not PPOTrainerColocateAsync
    assert hooked.__name__ == "PPOTrainerColocateAsyncWithDetachActorWorker"
    runner_cls.run(runner, config)  # a second run in the same process wraps verl's class again, not the wrapper
    assert seen["trainer_cls"].__mro__[1] is PPOTrainerColocateAsync


def test_ray_ships_the_task_runner_by_reference() -> None:
    """A class made inside a function is pickled by value, with a copy of verl's registry in its closure: its `run`
    then changed the copy and verl built the mode without the worker (the DC loop lost `domain_divergence`)."""
    import pickle

    from recipe.common.entry import task_runner_class

    runner_cls = task_runner_class().__ray_actor_class__
    assert pickle.loads(pickle.dumps(runner_cls)) is runner_cls  # plain pickle: by reference only


def test_run_checks_the_recipe_first_then_verl_before_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    import verl.trainer.main_ppo as main_ppo

    from recipe.common import entry

    monkeypatch.setenv("VERL_PLATFORM", "cpu")  # run() exports the config's plugin env: restored after the test
    monkeypatch.setenv("VERL_USE_EXTERNAL_MODULES", "")
    calls = []
    monkeypatch.setattr(main_ppo, "run_ppo", lambda config, task_runner_class: calls.append("run_ppo"))
    config = _compose("stand_in=cpu_tiny", "actor_rollout_ref.model.path=/m")

    def refuse(_config: DictConfig) -> None:
        calls.append("validate")
        raise ValueError("recipe says no")

    with pytest.raises(ValueError, match="recipe says no"):
        entry.run(config, refuse)
    assert calls == ["validate"]
    bad_mode = _compose("stand_in=cpu_tiny", "actor_rollout_ref.model.path=/m", "trainer.v1.trainer_mode=nope")
    with pytest.raises(ValueError, match="Unknown trainer 'nope'"):  # the driver knows the modes: fails before Ray
        entry.run(bad_mode, calls.append)
    assert calls == ["validate", bad_mode] and "run_ppo" not in calls
    entry.run(config, lambda _c: None)
    assert calls[-1] == "run_ppo"
    with pytest.raises(ValueError, match="trainer.use_v1=true"):
        entry.run(_compose("stand_in=cpu_tiny", "actor_rollout_ref.model.path=/m", "trainer.use_v1=false"), print)


def test_run_warns_once_when_the_installed_verl_is_not_the_tested_one(tmp_path, caplog, monkeypatch) -> None:
    """`run(..., required_verl)` names the tested verl before anything starts (here: validation stops the run)."""
    from recipe.common.entry import run

    monkeypatch.setenv("VERL_PLATFORM", "cpu")  # run() exports the config's plugin env: restored after the test
    monkeypatch.setenv("VERL_USE_EXTERNAL_MODULES", "")

    required = tmp_path / "REQUIRED_VERL.txt"
    required.write_text("VERL_VERSION=0.0.1\nVERL_COMMIT=\n")
    config = _compose("stand_in=cpu_tiny", "actor_rollout_ref.model.path=/m")

    class Stop(Exception):
        pass

    def validate(_config):
        raise Stop

    with caplog.at_level("WARNING"), pytest.raises(Stop):
        run(config, validate, required)
    assert "0.0.1" in caplog.text
