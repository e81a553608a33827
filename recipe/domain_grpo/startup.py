"""Start-up validation of a Domain-Aware GRPO run: fail before Ray starts, with a message that says what to change."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from omegaconf import OmegaConf

from verl_ext.config import DomainConfig, DomainConfigError, validate_for_training

logger = logging.getLogger(__name__)


def training_row_infos(files: str | Iterable[str]) -> list[dict]:
    """Each training row's `extra_info` from verl parquet files (only that column is read).

    Raises:
        ValueError: a file has no `extra_info` column or a row has no `transforms` entry.
    """
    import pyarrow.parquet as pq

    paths = [files] if isinstance(files, str) else list(files)
    infos: list[dict] = []
    for path in paths:
        table = pq.read_table(path, columns=["extra_info"])
        for i, info in enumerate(table.column("extra_info").to_pylist()):
            if not info or info.get("transforms") is None:
                raise ValueError(
                    f"{path} row {i}: extra_info.transforms is missing; convert the data with `python -m data_prep` "
                    "(it writes each row's label-preserving transform whitelist)"
                )
            infos.append({**info, "_where": f"{path} row {i}", "_path": str(path)})
    return infos


def training_row_whitelists(files: str | Iterable[str]) -> list[list[str]]:
    """Each training row's `extra_info.transforms` (see `training_row_infos`)."""
    return [list(info["transforms"]) for info in training_row_infos(files)]


def validate_run_config(config: Any) -> DomainConfig:
    """Parse `config.domain` and check it against the rest of the run (estimator, group size, training rows, engine).

    Every check that concerns the transformed view runs whenever one is needed (`domain.constraint` or
    `domain.shaping` on), whatever `algorithm.adv_estimator` is.

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
    infos = None
    if domain.needs_transformed_view or augment.enable or oc.enable:
        files = config.data.train_files
        infos = training_row_infos(files if isinstance(files, str) else list(files))
    whitelists = None if infos is None else [list(info["transforms"]) for info in infos]
    validate_for_training(domain, adv_estimator, int(config.actor_rollout_ref.rollout.n), whitelists)
    check_trainer_mode(config)
    if domain.needs_transformed_view:
        check_engine_support(config)
        check_view_wiring(config)
    worker = OmegaConf.select(config, "domain_recipe.actor_rollout_ref_worker", default=None)
    if domain.needs_transformed_view or (domain.validation.enable and worker is not None):
        check_actor_engine(config)
    if augment.enable or oc.enable:
        check_rows_have_split(infos or [], "augment" if augment.enable else "oc")
    if infos is not None:
        check_rows_get_a_view(infos)
    validate_agent_extras(config, whitelists)  # grpo_da / oc (domain_recipe.augment, domain_recipe.oc)
    budget = view_token_budget(config, domain)
    if budget is not None:
        print(describe_view_budget(budget))
    return domain


def view_token_budget(config: Any, domain: DomainConfig) -> dict[str, int] | None:
    """The actor's per-GPU token load with the transformed view, under `use_dynamic_bsz` (None: no view or off).

    verl packs each micro-batch up to `actor.ppo_max_token_len_per_gpu` tokens of the original view (update) and
    `rollout.log_prob_max_token_len_per_gpu` (old-log-prob pass); the recipe's worker runs every sample's V
    transformed views in the same micro-batch (V = 1; `domain.transforms.mode=mixture`: one per non-identity
    transform), the update with DC on (with gradient) and the old-log-prob pass with DR on (no gradient). So a
    micro-batch holds up to budget · (1 + V) tokens. Rule (examples/run_qwen25vl_rs.sh): the budget to set is what
    the GPU fits without the view divided by 1 + V.

    Returns:
        {"views", "update_budget", "update_tokens", "log_prob_budget", "log_prob_tokens"} (tokens per GPU).
    """
    actor = "actor_rollout_ref.actor"
    if not domain.needs_transformed_view or not OmegaConf.select(config, f"{actor}.use_dynamic_bsz", default=False):
        return None
    names = [n for n in domain.transforms.names if n != "identity"]
    views = len(names) if domain.transforms.mode == "mixture" else 1
    update = int(OmegaConf.select(config, f"{actor}.ppo_max_token_len_per_gpu"))
    log_prob = OmegaConf.select(config, "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu", default=None)
    log_prob = int(log_prob if log_prob is not None else update)
    return {
        "views": views,
        "update_budget": update,
        "update_tokens": update * (1 + (views if domain.constraint.active else 0)),
        "log_prob_budget": log_prob,
        "log_prob_tokens": log_prob * (1 + (views if domain.shaping.enable else 0)),
    }


def describe_view_budget(budget: dict[str, int]) -> str:
    """The start-up line about `view_token_budget`."""
    return (
        f"domain view memory (use_dynamic_bsz): {budget['views']} transformed view(s) per sample run in the same "
        f"micro-batch: update up to {budget['update_tokens']} tokens per GPU (ppo_max_token_len_per_gpu="
        f"{budget['update_budget']}), old-log-prob pass up to {budget['log_prob_tokens']} (log_prob_max_token_len_"
        f"per_gpu={budget['log_prob_budget']}); set the budgets to what the GPU fits without the view / "
        f"{1 + budget['views']}"
    )


def check_rows_get_a_view(infos: list[dict]) -> dict[str, int]:
    """Refuse a training file in which no row is training data by the split rule (`augment.is_training_split`:
    `extra_info.split` absent or "train" in any case): none of its rows would get the transformed view (DC = 0,
    D_i = 0) or the grpo_da/oc treatment. Files with some held-out rows are accepted, with a warning and the counts.

    Returns:
        {file: rows that get no view}.
    """
    from collections import Counter, defaultdict

    from recipe.domain_grpo.augment import is_training_split

    held_out: dict[str, Counter] = defaultdict(Counter)
    rows: Counter = Counter()
    for info in infos:
        path = info.get("_path", "?")
        rows[path] += 1
        if not is_training_split(info.get("split")):
            held_out[path][str(info.get("split"))] += 1
    for path, found in held_out.items():
        if sum(found.values()) == rows[path]:
            raise DomainConfigError(
                f"data.train_files: no row of {path} is training data by extra_info.split (values found: "
                f"{dict(sorted(found.items()))}); a row gets the transformed view only when its split is 'train' "
                "(any case) or absent: set extra_info.split='train' in the training rows, or use the train file"
            )
        logger.warning(
            "data.train_files: %d of %d rows of %s have a held-out extra_info.split %s and get no transformed view",
            sum(found.values()),
            rows[path],
            path,
            dict(sorted(found.items())),
        )
    return {path: sum(found.values()) for path, found in held_out.items()}


def check_rows_have_split(infos: list[dict], key: str) -> None:
    """`domain_recipe.augment`/`oc` treat a row as training data by its `extra_info.split`; refuse rows without one.

    verl 0.9.1 does not hand the validate flag to agent loops, so the split is how validation rows are told apart
    (never augmented, no OC response); a row without it would be treated as a training row.
    """
    for info in infos:
        if info.get("split") is None:
            raise DomainConfigError(
                f"domain_recipe.{key}.enable=true: {info['_where']} has no extra_info.split, so the agent loop cannot "
                "tell a validation row from a training row; convert the data with `python -m data_prep` (it writes "
                "split) or add extra_info.split to every row"
            )


def check_trainer_mode(config: Any) -> None:
    """`algorithm.adv_estimator=domain_grpo` reads D_i handed over by the recipe's trainer mode (`domain_grpo` or a
    subclass, e.g. novel_task's `rollout_dump`); verl's `sync` mode would fail at the first advantage, after rollout."""
    if str(config.algorithm.adv_estimator) != "domain_grpo":
        return
    mode = OmegaConf.select(config, "trainer.v1.trainer_mode", default=None)
    if mode is None:
        return
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY

    from recipe.domain_grpo.trainer import TRAINER_MODE, DomainGRPOTrainer

    cls = TRAINER_REGISTRY.get(str(mode))
    if cls is None or not issubclass(cls, DomainGRPOTrainer):
        what = "is not registered in this process" if cls is None else f"is {cls.__name__}"
        raise DomainConfigError(
            f"algorithm.adv_estimator=domain_grpo needs the recipe's trainer mode, which hands D_i to the estimator: "
            f"trainer.v1.trainer_mode={mode} {what}; set trainer.v1.trainer_mode={TRAINER_MODE} (or a subclass's "
            "name, with its module in VERL_USE_EXTERNAL_MODULES), or use algorithm.adv_estimator=grpo"
        )


def check_actor_engine(config: Any) -> None:
    """Actor settings under which the recipe's worker (the transformed view, the val-domain divergence) would crash
    after Ray and the rollout servers started: refused here with what to set."""
    actor = "actor_rollout_ref.actor"
    strategy = OmegaConf.select(config, f"{actor}.strategy", default=None)
    if strategy == "megatron":
        raise DomainConfigError(
            f"{actor}.strategy=megatron: the recipe's worker runs the transformed view through verl's FSDP engine "
            f"(its logits hook); set {actor}.strategy=fsdp2, or switch the domain terms and domain.validation off"
        )
    if strategy == "fsdp":
        raise DomainConfigError(
            f"{actor}.strategy=fsdp (FSDP1, verl's default) is not tested with the recipe's worker (the tests run "
            f"FSDP2); set {actor}.strategy=fsdp2 (as examples/run_qwen25vl_rs.sh does)"
        )
    pad = [k for k in (f"{actor}.pad_to_length", f"{actor}.fsdp_config.pad_to_length") if OmegaConf.select(config, k)]
    if pad:
        raise DomainConfigError(
            f"{pad[0]}=true: verl's engine refuses it with the top-k distillation hook that the recipe's worker uses "
            f"for the transformed view (verl's error would speak of distillation); set {pad[0]}=false"
        )
    ulysses = OmegaConf.select(config, f"{actor}.fsdp_config.ulysses_sequence_parallel_size", default=1)
    if int(ulysses or 1) > 1:
        raise DomainConfigError(
            f"{actor}.fsdp_config.ulysses_sequence_parallel_size={ulysses} shards the logits over ranks, which the "
            "recipe's divergence hook does not gather; set it to 1"
        )


def check_view_wiring(config: Any) -> None:
    """The transformed view needs the recipe's agent loop (it draws T) and worker (it runs the view)."""
    from omegaconf import OmegaConf

    loop = OmegaConf.select(config, "actor_rollout_ref.rollout.agent.default_agent_loop", default=None)
    if loop is not None and str(loop) != "domain_single_turn_agent":
        raise DomainConfigError(
            "domain.constraint/domain.shaping need a transformed view, drawn by the recipe's agent loop: set "
            f"actor_rollout_ref.rollout.agent.default_agent_loop=domain_single_turn_agent (got {loop}), or switch the "
            "domain terms off"
        )
    worker = OmegaConf.select(config, "domain_recipe.actor_rollout_ref_worker", default=None)
    if worker is not None or OmegaConf.select(config, "domain_recipe", default=None) is not None:
        from recipe.common.worker_hook import load_worker_cls
        from recipe.domain_grpo.worker import DomainActorRolloutRefWorker

        if not worker or not issubclass(load_worker_cls(str(worker)), DomainActorRolloutRefWorker):
            raise DomainConfigError(
                "domain.constraint/domain.shaping run the transformed view in the recipe's actor worker: set "
                "domain_recipe.actor_rollout_ref_worker=recipe.domain_grpo.worker.DomainActorRolloutRefWorker (or a "
                f"subclass; got {worker}), or switch the domain terms off"
            )
    if OmegaConf.select(config, "distillation.enabled", default=False):
        raise DomainConfigError(
            "distillation.enabled=true with the domain terms on: the recipe's worker installs its own loss (verl's "
            "ppo_loss + DC) and uses the logits hook distillation needs, so the distillation term would disappear; "
            "set distillation.enabled=false or switch the domain terms off"
        )


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
