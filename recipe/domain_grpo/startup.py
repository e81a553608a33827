"""Start-up validation of a Domain-Aware GRPO run: fail before Ray starts, with a message that says what to change."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from verl_ext.config import DomainConfig, DomainConfigError, validate_for_training


def training_row_whitelists(files: str | Iterable[str]) -> list[list[str]]:
    """Each training row's `extra_info.transforms` from verl parquet files (only that column is read).

    Raises:
        ValueError: a file has no `extra_info` column or a row has no `transforms` entry.
    """
    import pyarrow.parquet as pq

    paths = [files] if isinstance(files, str) else list(files)
    whitelists: list[list[str]] = []
    for path in paths:
        table = pq.read_table(path, columns=["extra_info"])
        for i, info in enumerate(table.column("extra_info").to_pylist()):
            if not info or info.get("transforms") is None:
                raise ValueError(
                    f"{path} row {i}: extra_info.transforms is missing; convert the data with `python -m data_prep` "
                    "(it writes each row's label-preserving transform whitelist)"
                )
            whitelists.append(list(info["transforms"]))
    return whitelists


def validate_run_config(config: Any) -> DomainConfig:
    """Parse `config.domain` and check it against the rest of the run (estimator, group size, training rows).

    Args:
        config: the full Hydra/OmegaConf run config (verl's ppo_trainer plus the recipe's keys).

    Returns:
        The parsed, frozen `DomainConfig`.
    """
    from omegaconf import OmegaConf

    section = config.get("domain")
    container = OmegaConf.to_container(section, resolve=True) if OmegaConf.is_config(section) else section
    domain = DomainConfig.from_dict(container)
    from recipe.domain_grpo.augment import extras_from_config, validate_agent_extras

    adv_estimator = str(config.algorithm.adv_estimator)
    augment, oc = extras_from_config(config)
    whitelists = None
    if (adv_estimator == "domain_grpo" and domain.needs_transformed_view) or augment.enable or oc.enable:
        files = config.data.train_files
        whitelists = training_row_whitelists(files if isinstance(files, str) else list(files))
    validate_for_training(domain, adv_estimator, int(config.actor_rollout_ref.rollout.n), whitelists)
    if domain.needs_transformed_view and adv_estimator == "domain_grpo":
        check_engine_support(config)
    validate_agent_extras(config, whitelists)  # grpo_da / oc (domain_recipe.augment, domain_recipe.oc)
    return domain


def check_engine_support(config: Any) -> None:
    """The worker reads full logits through verl's logits-processor hook: refuse engine settings that bypass it."""
    from omegaconf import OmegaConf

    if OmegaConf.select(config, "actor_rollout_ref.model.use_fused_kernels", default=False):
        raise DomainConfigError(
            "actor_rollout_ref.model.use_fused_kernels=true never materialises the full logits that the domain terms "
            "compare; set it to false (or switch the domain terms off)"
        )
    shaping = OmegaConf.select(config, "domain.shaping.enable", default=True)
    if shaping and OmegaConf.select(config, "algorithm.rollout_correction.bypass_mode", default=False):
        raise DomainConfigError(
            "algorithm.rollout_correction.bypass_mode=true skips the old-log-prob pass, where D_i is computed; set it "
            "to false or domain.shaping.enable=false"
        )
    if int(OmegaConf.select(config, "actor_rollout_ref.actor.ulysses_sequence_parallel_size", default=1)) > 1:
        raise DomainConfigError(
            "actor_rollout_ref.actor.ulysses_sequence_parallel_size > 1 shards the logits over ranks, which the "
            "recipe's divergence hook does not gather yet; set it to 1"
        )
