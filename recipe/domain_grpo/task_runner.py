"""The recipe's Ray TaskRunner: verl's ``TaskRunnerV1`` with the trainer class resolved through two config hooks.

Imported lazily by ``main_domain_grpo`` (importing ``verl.trainer.main_ppo`` resolves verl's device platform, which must
happen after the plugin env vars are exported). See ``main_domain_grpo``'s docstring for how the hooks are used.

How verl 0.9.1 picks the classes this module overrides:

* trainer: ``TaskRunnerV1.run`` calls ``get_trainer_cls(config.trainer.v1.trainer_mode)``
  (verl/trainer/main_ppo.py:141), a lookup in ``TRAINER_REGISTRY`` filled by ``@register_trainer(name)``
  (verl/trainer/ppo/v1/trainer_base.py:1996-2023; built-ins "sync", "colocate_async", "separate_async").
* actor/rollout/ref worker: ``PPOTrainer._init_resource_pool_mgr`` hardcodes ``ray.remote(ActorRolloutRefWorker)``
  into ``self.role_worker_mapping`` (trainer_base.py:805, 808 for a separate RefPolicy); ``PPOTrainer._setup`` then
  wraps it in ``RayClassWithInitArgs`` (trainer_base.py:247). verl's own separate_async mode swaps it by overriding
  ``_init_resource_pool_mgr`` (trainer_separate_async.py:114); :func:`with_actor_worker` does the same for any mode.
"""

from __future__ import annotations

from typing import Any

import ray
from omegaconf import DictConfig, OmegaConf
from verl.trainer.main_ppo import TaskRunnerV1
from verl.trainer.ppo.utils import Role
from verl.trainer.ppo.v1 import PPOTrainer, get_trainer_cls
from verl.utils.import_utils import load_class_from_fqn
from verl.utils.logging_utils import configure_verl_logging
from verl.workers.engine_workers import ActorRolloutRefWorker

from recipe.domain_grpo.replay_order import with_dispatch_order

# The roles whose worker is an ActorRolloutRefWorker (hybrid engine: one of the first three; RefPolicy only when the
# reference model runs in its own worker group).
ACTOR_ROLES = (Role.ActorRolloutRef, Role.ActorRollout, Role.Actor, Role.RefPolicy)
WORKER_KEY = "domain_recipe.actor_rollout_ref_worker"


def load_worker_cls(path: str) -> type[ActorRolloutRefWorker]:
    """Import ``package.module.ClassName`` and check it is an ``ActorRolloutRefWorker`` subclass."""
    worker_cls = load_class_from_fqn(path, "actor/rollout/ref worker")
    if not (isinstance(worker_cls, type) and issubclass(worker_cls, ActorRolloutRefWorker)):
        raise TypeError(f"{WORKER_KEY}={path!r} must name a subclass of verl's ActorRolloutRefWorker")
    return worker_cls


def replace_actor_worker(role_worker_mapping: dict[Role, Any], worker_cls: type[ActorRolloutRefWorker]) -> None:
    """Put ``ray.remote(worker_cls)`` in place of the mode's actor/rollout/ref worker (it must subclass that class)."""
    for role in ACTOR_ROLES:
        if role not in role_worker_mapping:
            continue
        current = role_worker_mapping[role]
        current_cls = getattr(current, "__ray_actor_class__", current)
        if not issubclass(worker_cls, current_cls):
            raise TypeError(
                f"{WORKER_KEY}: {worker_cls.__name__} must subclass {current_cls.__name__}, the worker this trainer "
                f"mode uses for role {role}"
            )
        role_worker_mapping[role] = ray.remote(worker_cls)


def with_actor_worker(trainer_cls: type[PPOTrainer], worker_cls: type[ActorRolloutRefWorker]) -> type[PPOTrainer]:
    """A subclass of ``trainer_cls`` whose actor/rollout/ref worker group is built from ``worker_cls``."""

    class TrainerWithWorker(trainer_cls):
        def _init_resource_pool_mgr(self) -> None:
            super()._init_resource_pool_mgr()
            replace_actor_worker(self.role_worker_mapping, worker_cls)

    TrainerWithWorker.__name__ = TrainerWithWorker.__qualname__ = f"{trainer_cls.__name__}With{worker_cls.__name__}"
    return TrainerWithWorker


def resolve_trainer_cls(config: DictConfig) -> type[PPOTrainer]:
    """verl's registered trainer for ``trainer.v1.trainer_mode``, with the configured worker class if one is set."""
    trainer_cls = get_trainer_cls(config.trainer.v1.trainer_mode)
    worker_path = OmegaConf.select(config, WORKER_KEY, default=None)
    if worker_path:
        trainer_cls = with_actor_worker(trainer_cls, load_worker_cls(str(worker_path)))
    if OmegaConf.select(config, "domain_recipe.deterministic", default=False):  # batches in dispatch order
        trainer_cls = with_dispatch_order(trainer_cls)
    return trainer_cls


class _DomainTaskRunner(TaskRunnerV1.__ray_actor_class__):
    """``TaskRunnerV1`` whose ``run`` builds the trainer from :func:`resolve_trainer_cls`.

    Same sequence as ``TaskRunnerV1.run`` (verl/trainer/main_ppo.py:133-165): TransferQueue up, trainer ``init``,
    agent loop manager (inherited ``init_agent_loop_manager``), ``fit``, then tracker and TransferQueue shutdown.
    """

    def run(self, config: DictConfig) -> None:
        configure_verl_logging()

        import transfer_queue as tq

        trainer_cls = resolve_trainer_cls(config)
        config.transfer_queue.enable = True
        OmegaConf.resolve(config)
        self.config = config
        tq.init(config.transfer_queue)
        succeeded = False
        try:
            self.trainer = trainer_cls(config=config)
            self.trainer.init()
            self.init_agent_loop_manager()
            self.trainer.fit(self.agent_loop_manager)
            succeeded = True
        finally:
            try:
                tracking = getattr(self.trainer, "logger", None)
                if tracking is not None:
                    tracking.finish(exit_code=0 if succeeded else 1)
            finally:
                tq.close()


DomainTaskRunner = ray.remote(_DomainTaskRunner)
