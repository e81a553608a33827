"""What the recipes' v1 trainer modes share: verl's sync semantics under a new mode name, and the parse of a config
section into the recipe's frozen dataclass.

    @register_trainer("domain_grpo")
    class DomainGRPOTrainer(SyncTrainerMode, PPOTrainerSync): ...

    domain = parse_section(config, "domain", DomainConfig)          # DomainConfig.from_dict(plain dict of the section)
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from omegaconf import OmegaConf

T = TypeVar("T", covariant=True)

SYNC_MODE = "sync"


class SyncTrainerMode:
    """Mixin (before verl's trainer class) for a synchronous trainer mode registered under its own name.

    verl 0.9.1 tests ``self.trainer_mode == "sync"`` (trainer_base.py:153 replay buffer, 731 dataloader refill,
    902/912/1004/1499 checkpoint and TransferQueue state), and ``PPOTrainer.__init__`` assigns the configured name;
    a new name would get the async replay buffer. This mode reports ``"sync"`` whatever name selected it.

    Each step it also counts the responses verl's loop lost to failed rollout requests (``recipe/lost_rollouts``,
    ``recipe/incomplete_groups``; ``domain_recipe.lost_rollouts``: warn | error; ``recipe/common/lost_rollouts.py``).
    """

    def _compute_advantage(self, batch: Any, metrics: dict) -> Any:
        from recipe.common.lost_rollouts import check_lost_rollouts, lost_rollouts_policy

        n = self.config.actor_rollout_ref.rollout.n
        tags = list(getattr(batch, "tags", None) or [])
        policy = lost_rollouts_policy(self.config)
        metrics.update(check_lost_rollouts(batch.keys, n, policy, tags, getattr(self, "global_steps", None)))
        return super()._compute_advantage(batch, metrics)

    @property
    def trainer_mode(self) -> str:
        return SYNC_MODE

    @trainer_mode.setter
    def trainer_mode(self, value: str) -> None:  # PPOTrainer.__init__ assigns the configured name
        pass


class FromDict(Protocol[T]):
    """A frozen config dataclass with a strict ``from_dict`` (unknown keys and bad values raise, naming the key)."""

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> T: ...


def parse_section(config: Any, key: str, config_cls: type[FromDict[T]]) -> T:
    """The section ``key`` (dotted; absent or null: the dataclass defaults) of an OmegaConf ``config``, resolved and
    parsed by ``config_cls.from_dict``. A plain dict section is accepted too."""
    section = OmegaConf.select(config, key, default=None) if OmegaConf.is_config(config) else config.get(key)
    if OmegaConf.is_config(section):
        section = OmegaConf.to_container(section, resolve=True)
    return config_cls.from_dict(section or {})
