"""DPO entry point: verl 0.9.1's own `main_ppo` through the shared recipe entry point, with PIVOT's start-up checks.

    python -m recipe.pivot.main_pivot_dpo [hydra overrides]                          # GPU: verl's own path
    python -m recipe.pivot.main_pivot_dpo stand_in=cpu_tiny [overrides]              # CPU stand-ins (tests/demo)

Config: `config/pivot_dpo.yaml` = verl's `ppo_trainer` + the `dpo:` section. What runs is verl's `run_ppo` ->
TaskRunner -> v1 trainer (`dpo` mode, recipe/pivot/trainer.py) -> engine workers / agent loop (`dpo_pair_agent`) /
TransferQueue / reward loop. `recipe.common.entry.run` exports the plugin env vars, runs the DPO equivalence's checks
(`recipe/pivot/startup.py`) before verl's own, and hands over to verl with the trainer-mode and worker hooks
documented there (`domain_recipe.actor_rollout_ref_worker`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from recipe.common.entry import run

# the verl this recipe was tested with: a run on another version warns once at start-up
REQUIRED_VERL = Path(__file__).with_name("REQUIRED_VERL.txt")


def validate(config: DictConfig) -> None:
    """The DPO equivalence's conditions (before verl's own checks: a DPO mistake gets a DPO message)."""
    from recipe.pivot.startup import validate_dpo_run

    validate_dpo_run(config)


@hydra.main(config_path="config", config_name="pivot_dpo", version_base=None)
def main(config: DictConfig) -> None:
    """Hydra entry point (`python -m recipe.pivot.main_pivot_dpo`); a configuration mistake exits 2 with one line."""
    from verl_ext.dpo import DPOConfigError

    try:
        run(config, validate, REQUIRED_VERL)
    except DPOConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
