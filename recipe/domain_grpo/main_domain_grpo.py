"""Domain-Aware GRPO entry point: verl 0.9.1's own ``main_ppo`` with two config hooks.

    python -m recipe.domain_grpo.main_domain_grpo [hydra overrides]                       # GPU: verl's own path
    python -m recipe.domain_grpo.main_domain_grpo --config-name cpu_tiny [overrides]      # CPU stand-ins (tests/demo)

Config: ``config/domain_grpo_trainer.yaml`` = verl's ``ppo_trainer`` (found through ``hydra.searchpath``) + ours.
What runs is verl's ``run_ppo`` -> TaskRunner -> v1 trainer -> engine workers / agent loop / TransferQueue / reward
loop; this module only (1) exports the plugin env vars the config names, (2) validates the config as
``main_ppo.main`` does, and (3) hands verl a TaskRunner (``task_runner.DomainTaskRunner``, through ``run_ppo``'s
``task_runner_class`` argument, the hook verl provides for recipes) that resolves the trainer class with the two hooks
below.

Hook (a), the actor/rollout/ref worker class::

    domain_recipe.actor_rollout_ref_worker: my_pkg.workers.DomainActorRolloutRefWorker   # null: verl's own

  The class must subclass ``verl.workers.engine_workers.ActorRolloutRefWorker`` (or, in a mode that already swaps it,
  e.g. separate_async's ``DetachActorWorker``, that class). It replaces the worker the selected trainer mode puts in
  ``role_worker_mapping`` (verl hardcodes it in ``PPOTrainer._init_resource_pool_mgr``, trainer_base.py:805); see
  ``task_runner.with_actor_worker``. Override methods keep verl's ``@register(...)`` decorator (copy the one on the
  base method): the decorator is what exposes them to the worker group and bridges TransferQueue (a ``TensorDict``
  with batch-sized fields returned from e.g. ``compute_log_prob`` is written to TransferQueue under its field names).

Hook (b), the v1 trainer mode: any class registered with verl's own decorator, selected by verl's own key::

    from verl.trainer.ppo.v1 import PPOTrainerSync, register_trainer

    @register_trainer("domain_sync")
    class DomainTrainer(PPOTrainerSync):
        ...

    trainer.v1.trainer_mode: domain_sync

  The registering module must be imported in the TaskRunner process: list it in
  ``ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES`` (default ``recipe.domain_grpo.plugins``,
  which imports the estimator, the trainer mode and the agent loop; with the CPU stand-ins
  ``[verl_ext.cpu, recipe.domain_grpo.plugins]``), which verl imports at ``import verl`` in every Ray process and
  this entry point imports in the driver. A Hydra list is joined with commas.
  Trap: verl compares ``self.trainer_mode`` with the string ``"sync"`` (trainer_base.py:153 replay buffer,
  731 dataloader refill, 902/912/1004/1499 checkpoint/TQ state), so a new name gets the async replay buffer and
  ``gen_batch_size=1``. A synchronous domain trainer keeps sync semantics by overriding the ``trainer_mode``
  attribute to report ``"sync"``, as ``recipe/domain_grpo/trainer.py``'s ``DomainGRPOTrainer`` does.

Both hooks compose: the worker hook wraps whatever class the mode names. The ``domain:`` section holds the method's
options (``verl_ext.config.DomainConfig``, strict), so the recipe's plumbing keys live in ``domain_recipe:``.
"""

from __future__ import annotations

import os

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf

# Env vars that select verl plugins; they must be set in this process before verl resolves its platform.
PLUGIN_ENV_VARS = ("VERL_PLATFORM", "VERL_USE_EXTERNAL_MODULES")
RUNTIME_ENV_VARS_KEY = "ray_kwargs.ray_init.runtime_env.env_vars"


def export_plugin_env(config: DictConfig) -> list[str]:
    """Copy the plugin env vars of the Ray runtime env into this process and import the plugin modules here too.

    The Ray workers get them from ``ray_init.runtime_env.env_vars`` (verl imports ``VERL_USE_EXTERNAL_MODULES`` at
    ``import verl``); the driver, which has usually imported verl already (Hydra's config search path), needs both the
    variables (read when verl first resolves its platform) and the imports. ``VERL_USE_EXTERNAL_MODULES`` may be given
    as a list (``...VERL_USE_EXTERNAL_MODULES=[verl_ext.cpu,recipe.domain_grpo.trainer]``); it is joined with commas in
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


def run(config: DictConfig) -> None:
    """Validate ``config`` as ``verl.trainer.main_ppo.main`` does; run verl's driver with the recipe's TaskRunner."""
    export_plugin_env(config)

    from verl.trainer.main_ppo import run_ppo
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config
    from verl.utils.device import auto_set_device

    from recipe.domain_grpo.startup import validate_run_config
    from recipe.domain_grpo.task_runner import DomainTaskRunner

    if not config.trainer.use_v1:
        raise ValueError("domain_grpo runs on verl's v1 trainer only: set trainer.use_v1=true")
    auto_set_device(config)
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    validate_run_config(config)  # the domain options against estimator, group size and the training rows
    run_ppo(config, task_runner_class=DomainTaskRunner)


@hydra.main(config_path="config", config_name="domain_grpo_trainer", version_base=None)
def main(config: DictConfig) -> None:
    """Hydra entry point (``python -m recipe.domain_grpo.main_domain_grpo``)."""
    run(config)


if __name__ == "__main__":
    main()
