"""DPO entry point: verl 0.9.1's own `main_ppo` with the PIVOT recipe's config and start-up checks.

    python -m recipe.pivot.main_pivot_dpo [hydra overrides]                          # GPU: verl's own path
    python -m recipe.pivot.main_pivot_dpo stand_in=cpu_tiny [overrides]              # CPU stand-ins (tests/demo)

Config: `config/pivot_dpo.yaml` = verl's `ppo_trainer` + the `dpo:` section. What runs is verl's `run_ppo` ->
TaskRunner -> v1 trainer (`dpo` mode, recipe/pivot/trainer.py) -> engine workers / agent loop (`dpo_pair_agent`) /
TransferQueue / reward loop. The TaskRunner and its worker hook are the domain recipe's
(`recipe.domain_grpo.task_runner.DomainTaskRunner`, `domain_recipe.actor_rollout_ref_worker`), reused unchanged.
This module only exports the plugin env vars, validates the config as `main_ppo.main` does plus the DPO
equivalence's conditions (`recipe/pivot/startup.py`), and hands over to verl.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig


def run(config: DictConfig) -> None:
    """Validate `config` (verl's checks, then DPO's) and run verl's driver."""
    from recipe.domain_grpo.main_domain_grpo import export_plugin_env

    export_plugin_env(config)

    from verl.trainer.main_ppo import run_ppo
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config
    from verl.utils.device import auto_set_device

    from recipe.domain_grpo.task_runner import DomainTaskRunner
    from recipe.pivot.startup import validate_dpo_run

    validate_dpo_run(config)  # before verl's own checks: a DPO mistake gets a DPO message
    auto_set_device(config)
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    run_ppo(config, task_runner_class=DomainTaskRunner)


@hydra.main(config_path="config", config_name="pivot_dpo", version_base=None)
def main(config: DictConfig) -> None:
    """Hydra entry point (`python -m recipe.pivot.main_pivot_dpo`); a configuration mistake exits 2 with one line."""
    from verl_ext.dpo import DPOConfigError

    try:
        run(config)
    except DPOConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
