"""Domain-Aware GRPO entry point: verl 0.9.1's own ``main_ppo`` through the shared recipe entry point.

    python -m recipe.domain_grpo.main_domain_grpo [hydra overrides]                   # GPU: verl's own path
    python -m recipe.domain_grpo.main_domain_grpo stand_in=cpu_tiny [overrides]       # CPU stand-ins (tests/demo)

Config: ``config/domain_grpo_trainer.yaml`` = verl's ``ppo_trainer`` (found through ``hydra.searchpath``) + ours.
What runs is verl's ``run_ppo`` -> TaskRunner -> v1 trainer -> engine workers / agent loop / TransferQueue / reward
loop; ``recipe.common.entry.run`` exports the plugin env vars, runs this recipe's start-up checks
(``startup.validate_run_config``: the ``domain:`` options against estimator, group size and the training rows) and
verl's, and hands over to verl with the two hooks documented there: the trainer mode (``trainer.v1.trainer_mode:
domain_grpo``, ``trainer.py``) and the actor worker (``domain_recipe.actor_rollout_ref_worker``, ``worker.py``).
The ``domain:`` section holds the method's options (``verl_ext.config.DomainConfig``, strict), so the recipe's
plumbing keys live in ``domain_recipe:``.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from recipe.common.entry import run

# the verl this recipe was tested with: a run on another version warns once at start-up
REQUIRED_VERL = Path(__file__).with_name("REQUIRED_VERL.txt")


def validate(config: DictConfig) -> None:
    """The recipe's start-up checks (imported here, after the plugin env vars are exported)."""
    from recipe.domain_grpo.startup import validate_run_config

    validate_run_config(config)


@hydra.main(config_path="config", config_name="domain_grpo_trainer", version_base=None)
def main(config: DictConfig) -> None:
    """Hydra entry point (``python -m recipe.domain_grpo.main_domain_grpo``)."""
    run(config, validate, REQUIRED_VERL)


if __name__ == "__main__":
    main()
