"""The recipes' Ray TaskRunner: verl's ``TaskRunnerV1``, whose own ``run`` builds the trainer mode with the worker
hook (``recipe.common.worker_hook.resolve_trainer_cls``). Imported lazily by ``entry.task_runner_class`` (importing
``verl.trainer.main_ppo`` resolves verl's device platform, after the plugin env vars are exported); a module-level
class, so Ray pickles it by reference and ``run`` changes the real ``TRAINER_REGISTRY`` of the actor's process.
"""

from __future__ import annotations

import ray
from omegaconf import DictConfig
from verl.trainer.main_ppo import TaskRunnerV1
from verl.trainer.ppo.v1 import trainer_base

from recipe.common.worker_hook import resolve_trainer_cls


class RecipeTaskRunner(TaskRunnerV1.__ray_actor_class__):
    """verl's ``TaskRunnerV1``; ``run`` is verl's, after pointing the configured mode's name at the hooked class."""

    def run(self, config: DictConfig) -> None:
        # verl's run looks the mode up by name (main_ppo.py:141); in this actor's process the name selects the subclass
        # with the configured worker (the registry's own decorator refuses a second class under a name).
        trainer_base.TRAINER_REGISTRY[config.trainer.v1.trainer_mode] = resolve_trainer_cls(config)
        super().run(config)


RemoteRecipeTaskRunner = ray.remote(RecipeTaskRunner)
