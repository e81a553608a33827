"""The entry point every recipe's ``main`` uses: verl 0.9.1's own ``main_ppo`` path with two config hooks.

    run(config, validate)          # e.g. recipe/domain_grpo/main_domain_grpo.py, recipe/pivot/main_pivot_dpo.py

What runs is verl's ``run_ppo`` -> ``TaskRunnerV1.run`` -> v1 trainer -> engine workers / agent loop / TransferQueue
/ reward loop. :func:`run` only (1) exports the plugin env vars the config names (:func:`export_plugin_env`),
(2) validates the config: the recipe's own checks (``validate``), then verl's as ``main_ppo.main`` does, and (3) hands
verl's ``run_ppo`` a TaskRunner (its ``task_runner_class`` argument, the hook verl provides for recipes) that is
verl's ``TaskRunnerV1`` with the worker hook below; verl's ``run`` itself is not copied.

Hook (a), the trainer mode: any class registered with verl's own ``@register_trainer(name)``, selected by verl's own
key ``trainer.v1.trainer_mode: name``. The registering module must be imported in the TaskRunner process: list it in
``ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES`` (a module or a list, joined with commas), which
verl imports at ``import verl`` in every Ray process and :func:`export_plugin_env` imports in the driver.
Trap: verl compares ``self.trainer_mode`` with the string ``"sync"`` (trainer_base.py:153 replay buffer, 731
dataloader refill, 902/912/1004/1499 checkpoint/TransferQueue state), so a new name gets the async replay buffer; a
synchronous mode keeps verl's sync semantics with ``recipe.common.modes.SyncTrainerMode``.

Hook (b), the actor/rollout/ref worker class::

    domain_recipe.actor_rollout_ref_worker: my_pkg.workers.MyActorRolloutRefWorker   # null: verl's own

  The class must subclass the worker the selected mode uses (``verl.workers.engine_workers.ActorRolloutRefWorker``;
  separate_async's ``DetachActorWorker``). verl hardcodes that class where it builds the resource pools
  (``PPOTrainer._init_resource_pool_mgr``, trainer_base.py:805/808) and swaps it the same way in its separate_async
  mode (trainer_separate_async.py:114); :func:`with_actor_worker` is that override for any mode. verl resolves the
  mode by name inside ``TaskRunnerV1.run`` (main_ppo.py:141), so the recipe's TaskRunner, in its own Ray process and
  before calling verl's ``run`` unchanged, points that name in verl's ``TRAINER_REGISTRY`` at the subclass.
  Override methods keep verl's ``@register(...)`` decorator (copy the one on the base method): it exposes them to the
  worker group and bridges TransferQueue.

verl is imported lazily here: importing ``verl.trainer.main_ppo`` resolves verl's device platform, which must happen
after the plugin env vars are exported.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from recipe.common.worker_hook import DETERMINISTIC_KEY, WORKER_KEY, resolve_trainer_cls, with_actor_worker

__all__ = [
    "DETERMINISTIC_KEY",
    "WORKER_KEY",
    "export_plugin_env",
    "resolve_trainer_cls",
    "run",
    "task_runner_class",
    "with_actor_worker",
]

# Env vars that select verl plugins; they must be set in this process before verl resolves its platform.
PLUGIN_ENV_VARS = ("VERL_PLATFORM", "VERL_USE_EXTERNAL_MODULES")
RUNTIME_ENV_VARS_KEY = "ray_kwargs.ray_init.runtime_env.env_vars"


def export_plugin_env(config: DictConfig) -> list[str]:
    """Copy the plugin env vars of the Ray runtime env into this process and import the plugin modules here too.

    The Ray workers get them from ``ray_init.runtime_env.env_vars`` (verl imports ``VERL_USE_EXTERNAL_MODULES`` at
    ``import verl``); the driver, which has usually imported verl already (Hydra's config search path), needs both the
    variables (read when verl first resolves its platform) and the imports. ``VERL_USE_EXTERNAL_MODULES`` may be given
    as a list (``...VERL_USE_EXTERNAL_MODULES=[verl_ext.cpu,recipe.domain_grpo.plugins]``); it is joined with commas in
    ``config`` too, since Ray env vars are strings. Returns the imported module names.
    """
    env_vars = OmegaConf.select(config, RUNTIME_ENV_VARS_KEY, default=None) or {}
    modules_value = env_vars.get("VERL_USE_EXTERNAL_MODULES")
    if isinstance(modules_value, ListConfig | list | tuple):
        env_vars["VERL_USE_EXTERNAL_MODULES"] = ",".join(str(name) for name in modules_value)
    for key in PLUGIN_ENV_VARS:
        if env_vars.get(key) is not None:
            os.environ[key] = str(env_vars[key])
    modules = [name.strip() for name in os.environ.get("VERL_USE_EXTERNAL_MODULES", "").split(",") if name.strip()]

    from verl.utils.import_utils import import_external_libs

    import_external_libs(modules or None)
    return modules


def task_runner_class() -> Any:
    """verl's ``TaskRunnerV1`` (a Ray actor class) whose ``run`` selects the trainer of :func:`resolve_trainer_cls`
    and then runs verl's own ``TaskRunnerV1.run`` (``recipe/common/task_runner.py``)."""
    from recipe.common.task_runner import RemoteRecipeTaskRunner

    return RemoteRecipeTaskRunner


def run(
    config: DictConfig, validate: Callable[[DictConfig], Any], required_verl: str | os.PathLike | None = None
) -> None:
    """Export the plugin env, check ``config`` (``validate``: the recipe's own checks, first, so a mistake in the
    recipe's keys gets the recipe's message; then verl's, as ``verl.trainer.main_ppo.main`` does) and run verl's
    driver with the recipe TaskRunner. ``required_verl``: the recipe's ``REQUIRED_VERL.txt``; a run on another verl
    version warns once, naming the tested one (``verl_ext.verl_version.warn_if_untested_verl``)."""
    if required_verl is not None:
        from verl_ext.verl_version import warn_if_untested_verl

        warn_if_untested_verl(required_verl)
    export_plugin_env(config)

    from verl.trainer.main_ppo import run_ppo
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config
    from verl.utils.device import auto_set_device

    if not config.trainer.use_v1:
        raise ValueError("the recipes run on verl's v1 trainer only: set trainer.use_v1=true")
    from recipe.common.lost_rollouts import lost_rollouts_policy

    lost_rollouts_policy(config)  # a bad domain_recipe.lost_rollouts fails here, not after the first rollout
    validate(config)
    auto_set_device(config)
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    resolve_trainer_cls(config)  # an unknown mode or a wrong worker class fails here, before Ray starts
    run_ppo(config, task_runner_class=task_runner_class())
