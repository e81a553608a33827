"""The worker and replay-order hooks of the recipes' trainer modes (see ``recipe.common.entry`` for how they are used).

``resolve_trainer_cls(config)`` is verl's registered trainer for ``trainer.v1.trainer_mode`` with the configured
actor/rollout/ref worker class (``domain_recipe.actor_rollout_ref_worker``) and, under ``domain_recipe.deterministic``,
the replay buffer in dispatch order (``recipe.common.replay_order``). Used by the entry point (a wrong class fails
before Ray starts) and by the TaskRunner in its Ray process. verl is imported lazily.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

WORKER_KEY = "domain_recipe.actor_rollout_ref_worker"
DETERMINISTIC_KEY = "domain_recipe.deterministic"


def load_worker_cls(path: str) -> type:
    """Import ``package.module.ClassName`` and check it is a subclass of verl's ``ActorRolloutRefWorker``."""
    from verl.utils.import_utils import load_class_from_fqn
    from verl.workers.engine_workers import ActorRolloutRefWorker

    worker_cls = load_class_from_fqn(path, "actor/rollout/ref worker")
    if not (isinstance(worker_cls, type) and issubclass(worker_cls, ActorRolloutRefWorker)):
        raise TypeError(f"{WORKER_KEY}={path!r} must name a subclass of verl's ActorRolloutRefWorker")
    return worker_cls


def replace_actor_worker(role_worker_mapping: dict[Any, Any], worker_cls: type) -> None:
    """Put ``ray.remote(worker_cls)`` in place of the mode's actor/rollout/ref worker (it must subclass that class).

    The roles are those whose worker is an ``ActorRolloutRefWorker`` (hybrid engine: one of the first three;
    ``RefPolicy`` only when the reference model runs in its own worker group).
    """
    import ray
    from verl.trainer.ppo.utils import Role

    for role in (Role.ActorRolloutRef, Role.ActorRollout, Role.Actor, Role.RefPolicy):
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


def with_actor_worker(trainer_cls: type, worker_cls: type) -> type:
    """A subclass of the trainer mode ``trainer_cls`` whose actor/rollout/ref worker group is built from
    ``worker_cls`` (the override verl's separate_async mode makes, for any mode)."""

    class TrainerWithWorker(trainer_cls):
        base_trainer_cls = trainer_cls

        def _init_resource_pool_mgr(self) -> None:
            super()._init_resource_pool_mgr()
            replace_actor_worker(self.role_worker_mapping, worker_cls)

    TrainerWithWorker.__name__ = TrainerWithWorker.__qualname__ = f"{trainer_cls.__name__}With{worker_cls.__name__}"
    return TrainerWithWorker


def resolve_trainer_cls(config: DictConfig) -> type:
    """verl's registered trainer for ``trainer.v1.trainer_mode``, with the configured worker class if one is set."""
    from verl.trainer.ppo.v1 import get_trainer_cls

    trainer_cls = get_trainer_cls(config.trainer.v1.trainer_mode)
    trainer_cls = getattr(trainer_cls, "base_trainer_cls", trainer_cls)  # a second run in the same process
    worker_path = OmegaConf.select(config, WORKER_KEY, default=None)
    if worker_path:
        trainer_cls = with_actor_worker(trainer_cls, load_worker_cls(str(worker_path)))
    if OmegaConf.select(config, DETERMINISTIC_KEY, default=False):  # batches in dispatch order (reproducible runs)
        from recipe.common.replay_order import with_dispatch_order

        trainer_cls = with_dispatch_order(trainer_cls)
    return trainer_cls
