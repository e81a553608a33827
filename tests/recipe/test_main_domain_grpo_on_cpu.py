"""The recipe entry point without Ray: config composition, worker-class and trainer-mode hooks, plugin env export."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from verl_ext.config import DomainConfig

CONFIG_DIR = Path(__file__).resolve().parents[2] / "recipe" / "domain_grpo" / "config"


def _compose(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(config_name="domain_grpo_trainer", overrides=list(overrides))


def test_config_is_verls_ppo_trainer_plus_recipe_keys() -> None:
    from verl.trainer.config import AlgoConfig
    from verl.utils.config import omega_conf_to_dataclass

    config = _compose()
    assert config.trainer.use_v1 and config.trainer.v1.trainer_mode == "domain_grpo"
    assert config.trainer.device == "cuda"  # the GPU path: verl's defaults
    assert OmegaConf.is_missing(config.actor_rollout_ref.rollout, "name")
    assert config.algorithm.adv_estimator == "domain_grpo"
    assert isinstance(omega_conf_to_dataclass(config.algorithm), AlgoConfig)  # nothing added under `algorithm`
    assert config.domain_recipe.actor_rollout_ref_worker == "recipe.domain_grpo.worker.DomainActorRolloutRefWorker"
    assert config.actor_rollout_ref.rollout.agent.default_agent_loop == "domain_single_turn_agent"
    # the YAML's `domain:` section is exactly the dataclass defaults, and the workers see the same section
    assert DomainConfig.from_dict(OmegaConf.to_container(config.domain)) == DomainConfig()
    assert OmegaConf.to_container(config.actor_rollout_ref.domain, resolve=True) == OmegaConf.to_container(
        config.domain
    )
    assert config.ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES == "recipe.domain_grpo.plugins"


def test_cpu_stand_in_overlay() -> None:
    config = _compose("stand_in=cpu_tiny", "actor_rollout_ref.model.path=/models/tiny")
    env = config.ray_kwargs.ray_init.runtime_env.env_vars
    assert env.VERL_PLATFORM == "cpu"
    assert list(env.VERL_USE_EXTERNAL_MODULES) == ["verl_ext.cpu", "recipe.domain_grpo.plugins"]
    assert config.ray_kwargs.ray_init.num_gpus == config.trainer.n_gpus_per_node == 1
    assert config.trainer.device == "cpu"
    assert config.actor_rollout_ref.rollout.name == "hf"
    assert config.actor_rollout_ref.rollout.tensor_model_parallel_size == 1
    assert config.actor_rollout_ref.actor.strategy == "fsdp2"
    assert config.actor_rollout_ref.actor.fsdp_config.strategy == "fsdp"  # synced to fsdp2 by FSDPActorConfig
    assert config.actor_rollout_ref.model.use_remove_padding is False
    assert config.actor_rollout_ref.model.override_config.attn_implementation == "sdpa"
    assert config.transfer_queue.backend.SimpleStorage.num_data_storage_units == 2
    assert "file" in config.trainer.logger


def _bare_trainer(trainer_cls: type, config: DictConfig):
    """A trainer object with only its config set: enough for ``_init_resource_pool_mgr`` (no Ray, no models)."""
    trainer = object.__new__(trainer_cls)
    trainer.config = config
    return trainer


def test_plain_verl_trainer_and_worker_when_the_hooks_are_off() -> None:
    from verl.trainer.ppo.utils import Role
    from verl.trainer.ppo.v1 import PPOTrainerSync
    from verl.workers.engine_workers import ActorRolloutRefWorker

    from recipe.common.worker_hook import resolve_trainer_cls

    config = _compose(
        "stand_in=cpu_tiny",
        "actor_rollout_ref.model.path=/m",
        "trainer.v1.trainer_mode=sync",
        "domain_recipe.actor_rollout_ref_worker=null",
        "domain_recipe.deterministic=false",
    )
    trainer_cls = resolve_trainer_cls(config)
    assert trainer_cls is PPOTrainerSync
    trainer = _bare_trainer(trainer_cls, config)
    trainer._init_resource_pool_mgr()
    assert trainer.role_worker_mapping[Role.ActorRollout].__ray_actor_class__ is ActorRolloutRefWorker


def test_configured_worker_class_replaces_verls_in_any_mode() -> None:
    from verl.experimental.separation.engine_workers import DetachActorWorker
    from verl.trainer.ppo.utils import Role
    from verl.trainer.ppo.v1 import PPOTrainerColocateAsync

    from recipe.common.worker_hook import resolve_trainer_cls

    worker = "verl.experimental.separation.engine_workers.DetachActorWorker"
    config = _compose(
        "stand_in=cpu_tiny",
        "actor_rollout_ref.model.path=/m",
        f"domain_recipe.actor_rollout_ref_worker={worker}",
        "trainer.v1.trainer_mode=colocate_async",
        "actor_rollout_ref.actor.use_kl_loss=true",  # a reference model: role ActorRolloutRef
    )
    trainer_cls = resolve_trainer_cls(config)
    assert issubclass(trainer_cls, PPOTrainerColocateAsync) and trainer_cls is not PPOTrainerColocateAsync
    trainer = _bare_trainer(trainer_cls, config)
    trainer._init_resource_pool_mgr()
    assert set(trainer.role_worker_mapping) == {Role.ActorRolloutRef}
    assert trainer.role_worker_mapping[Role.ActorRolloutRef].__ray_actor_class__ is DetachActorWorker


def test_worker_class_must_be_an_actor_rollout_ref_worker() -> None:
    import ray
    from verl.experimental.separation.engine_workers import DetachActorWorker
    from verl.trainer.ppo.utils import Role
    from verl.workers.engine_workers import ActorRolloutRefWorker

    from recipe.common.worker_hook import load_worker_cls, replace_actor_worker

    with pytest.raises(TypeError, match="ActorRolloutRefWorker"):
        load_worker_cls("verl.workers.engine_workers.TrainingWorker")
    # a mode that already uses a subclass (here DetachActorWorker) needs a subclass of that one
    mapping = {Role.ActorRollout: ray.remote(DetachActorWorker)}
    with pytest.raises(TypeError, match="must subclass DetachActorWorker"):
        replace_actor_worker(mapping, ActorRolloutRefWorker)


def test_unknown_trainer_mode_lists_the_registered_ones() -> None:
    from recipe.common.worker_hook import resolve_trainer_cls

    config = _compose("stand_in=cpu_tiny", "actor_rollout_ref.model.path=/m", "trainer.v1.trainer_mode=nope")
    with pytest.raises(ValueError, match="Available trainers: .*sync"):
        resolve_trainer_cls(config)


def test_export_plugin_env_sets_driver_env_and_imports_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    from recipe.common.entry import export_plugin_env

    monkeypatch.delenv("VERL_PLATFORM", raising=False)
    monkeypatch.setenv("VERL_USE_EXTERNAL_MODULES", "")
    config = OmegaConf.create(
        {"ray_kwargs": {"ray_init": {"runtime_env": {"env_vars": {"VERL_USE_EXTERNAL_MODULES": "verl_ext.cpu"}}}}}
    )
    assert export_plugin_env(config) == ["verl_ext.cpu"]
    assert os.environ["VERL_USE_EXTERNAL_MODULES"] == "verl_ext.cpu"
    assert "VERL_PLATFORM" not in os.environ
    monkeypatch.setenv("VERL_PLATFORM", "unset-by-test")  # restored by monkeypatch after the test
    listed = _compose(
        "stand_in=cpu_tiny",
        "actor_rollout_ref.model.path=/m",
        "ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES=[verl_ext.cpu,verl_ext.registry]",
    )
    assert export_plugin_env(listed) == ["verl_ext.cpu", "verl_ext.registry"]
    assert listed.ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES == "verl_ext.cpu,verl_ext.registry"
    assert os.environ["VERL_PLATFORM"] == "cpu"
    bad = OmegaConf.create(
        {"ray_kwargs": {"ray_init": {"runtime_env": {"env_vars": {"VERL_USE_EXTERNAL_MODULES": "no_such_mod"}}}}}
    )
    with pytest.raises(ModuleNotFoundError):
        export_plugin_env(bad)


def test_a_new_trainer_mode_name_needs_the_sync_override() -> None:
    """The trap documented in main_domain_grpo: verl keys sync behaviour on the mode *name* being "sync"."""
    from verl.trainer.ppo.v1 import PPOTrainerSync, get_trainer_cls, register_trainer
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer, ReplayBufferAsync

    class PlainDomainTrainer(PPOTrainerSync):
        pass

    class SyncDomainTrainer(PPOTrainerSync):
        @property
        def trainer_mode(self) -> str:
            return "sync"

        @trainer_mode.setter
        def trainer_mode(self, value: str) -> None:
            pass

    register_trainer("test_plain_domain")(get_trainer_cls_or(PlainDomainTrainer, "test_plain_domain"))
    register_trainer("test_sync_domain")(get_trainer_cls_or(SyncDomainTrainer, "test_sync_domain"))
    overrides = ("stand_in=cpu_tiny", "actor_rollout_ref.model.path=/m")
    plain = get_trainer_cls("test_plain_domain")(
        config=_compose(*overrides, "trainer.v1.trainer_mode=test_plain_domain")
    )
    synced = get_trainer_cls("test_sync_domain")(
        config=_compose(*overrides, "trainer.v1.trainer_mode=test_sync_domain")
    )
    assert type(plain.replay_buffer) is ReplayBufferAsync  # the async sampler, despite subclassing PPOTrainerSync
    assert type(synced.replay_buffer) is ReplayBuffer and synced.trainer_mode == "sync"


def get_trainer_cls_or(cls: type, name: str) -> type:
    """The class already registered under ``name`` (a re-run in the same process), else ``cls``."""
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY

    return TRAINER_REGISTRY.get(name, cls)
