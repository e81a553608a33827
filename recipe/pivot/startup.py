"""Start-up validation of a DPO run: every verl setting the DPO-as-policy-gradient equivalence needs, checked before
Ray starts, each error naming the key and what to set.

The equivalence (`verl_ext/dpo.py`): verl's PPO surrogate −Σ_t A_t·ratio_t has gradient −Σ_t A_t ∇log π at ratio 1.
It needs ratio 1 (one optimiser step per batch, old log-probs recomputed by the actor at the current weights, no
importance weights), the plain token sum (no normalisation, no clipping mode that changes the gradient at ratio 1),
no extra loss term (entropy, KL with a non-zero coefficient, KL in the reward), the reference model (for π_ref), and
log-probs at temperature 1 (the actor divides the logits by the rollout temperature).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from omegaconf import OmegaConf

from verl_ext.dpo import DPOConfig, DPOConfigError

AGENT_NAME = "dpo_pair_agent"
FREEZE_TARGET = "recipe.pivot.freeze.PivotFSDPEngineConfig"


def _get(config: Any, key: str, default: Any = None) -> Any:
    return OmegaConf.select(config, key, default=default)


def _require(config: Any, key: str, expected: Any, why: str, default: Any = None) -> None:
    value = _get(config, key, default)
    if value != expected:
        raise DPOConfigError(f"{key}={value!r}: DPO through verl needs {key}={expected!r} ({why})")


def dpo_config(config: Any) -> DPOConfig:
    """The parsed `dpo:` section of a run config."""
    section = config.get("dpo")
    if OmegaConf.is_config(section):
        section = OmegaConf.to_container(section, resolve=True)
    return DPOConfig.from_dict(section)


def check_equivalence(config: Any) -> None:
    """The verl settings under which one actor update is one step on the DPO loss (see the module docstring)."""
    _require(config, "trainer.use_v1", True, "the dpo trainer mode is a v1 trainer mode")
    _require(config, "algorithm.adv_estimator", "dpo", "the per-sample DPO coefficients are the advantages")
    _require(config, "trainer.v1.trainer_mode", "dpo", "the trainer mode forms the pairs and computes Δ")
    _require(config, "actor_rollout_ref.actor.ppo_epochs", 1, "one optimiser step per batch keeps the ratio at 1")
    mini, batch = _get(config, "actor_rollout_ref.actor.ppo_mini_batch_size"), _get(config, "data.train_batch_size")
    if mini != batch:
        raise DPOConfigError(
            f"actor_rollout_ref.actor.ppo_mini_batch_size={mini!r} must equal data.train_batch_size={batch!r}: DPO "
            "through verl needs one optimiser step per batch (a second mini-batch would see ratio != 1)"
        )
    _require(config, "actor_rollout_ref.actor.loss_agg_mode", "token-sum", "the advantages carry the 1/N_pairs")
    _require(config, "actor_rollout_ref.actor.policy_loss.loss_mode", "vanilla", "its gradient at ratio 1 is −A∇logπ")
    _require(config, "actor_rollout_ref.actor.entropy_coeff", 0, "no entropy term in the DPO loss")
    _require(config, "actor_rollout_ref.actor.use_kl_loss", True, "it starts verl's reference worker: π_ref")
    _require(config, "actor_rollout_ref.actor.kl_loss_coef", 0, "the reference serves Δ only; no KL term")
    _require(config, "algorithm.use_kl_in_reward", False, "no KL penalty in the reward")
    _require(config, "actor_rollout_ref.actor.use_rollout_log_probs", False, "old log-probs come from the actor", False)
    _require(config, "algorithm.rollout_correction.bypass_mode", False, "old log-probs are recomputed by the actor")
    _require(config, "algorithm.rollout_correction.rollout_is", None, "no importance weights on the loss")
    _require(config, "algorithm.rollout_correction.rollout_rs", None, "no rejection of samples after pairing")
    temperature = _get(config, "actor_rollout_ref.rollout.temperature")
    if float(temperature) != 1.0:
        raise DPOConfigError(
            f"actor_rollout_ref.rollout.temperature={temperature!r}: DPO through verl needs 1.0 (the actor's and the "
            "reference's log-probs are taken at the rollout temperature; DPO's π is the temperature-1 policy)"
        )
    if _get(config, "critic.enable"):
        raise DPOConfigError("critic.enable=true: DPO has no critic; set critic.enable=false (or null)")
    _require(config, "trainer.critic_warmup", 0, "the actor must update from the first step", 0)
    if _get(config, "distillation.enabled", False):
        raise DPOConfigError("distillation.enabled=true: DPO through verl needs distillation off")


def check_pairs(config: Any, dpo: DPOConfig) -> None:
    """Group size, agent loop and (offline) the training rows' pair columns."""
    n = int(_get(config, "actor_rollout_ref.rollout.n"))
    source = dpo.pairs.source
    if source == "offline" and n != 2:
        raise DPOConfigError(
            f"actor_rollout_ref.rollout.n={n}: dpo.pairs.source=offline answers session 0 with the chosen and "
            "session 1 with the rejected text; set actor_rollout_ref.rollout.n=2"
        )
    if source in ("online", "mixed") and n < 2:
        raise DPOConfigError(f"actor_rollout_ref.rollout.n={n}: online pairs need >= 2 samples per prompt")
    agent = _get(config, "actor_rollout_ref.rollout.agent.default_agent_loop")
    if source != "online" and agent != AGENT_NAME:
        raise DPOConfigError(
            f"actor_rollout_ref.rollout.agent.default_agent_loop={agent!r}: dpo.pairs.source={source} needs "
            f"{AGENT_NAME!r} (it answers the offline pairs' texts)"
        )
    if source != "online" and _get(config, "actor_rollout_ref.rollout.calculate_log_probs"):
        raise DPOConfigError(
            f"actor_rollout_ref.rollout.calculate_log_probs=true: dpo.pairs.source={source} teacher-forces the pairs, "
            "which have no rollout log-probs; set it to false (DPO uses the actor's recomputed log-probs)"
        )
    if source == "offline":
        files = _get(config, "data.train_files")
        check_offline_rows([files] if isinstance(files, str) else list(files), dpo)


def check_offline_rows(files: Iterable[str], dpo: DPOConfig) -> int:
    """Every training row has non-empty chosen and rejected texts that differ; returns the number of rows.

    Raises:
        DPOConfigError: a file lacks the columns, or a row's pair is empty or identical (name of file and row).
    """
    import pyarrow.parquet as pq

    columns = [dpo.pairs.chosen_column, dpo.pairs.rejected_column]
    total = 0
    for path in files:
        names = pq.read_schema(path).names
        missing = [c for c in columns if c not in names]
        if missing:
            raise DPOConfigError(
                f"{path}: no column(s) {missing} for dpo.pairs.source=offline; convert the pairs with "
                "`python -m data_prep preference-pairs` (or set dpo.pairs.chosen_column / rejected_column)"
            )
        table = pq.read_table(path, columns=columns).to_pydict()
        for i, (chosen, rejected) in enumerate(zip(table[columns[0]], table[columns[1]])):
            if not (chosen and str(chosen).strip()) or not (rejected and str(rejected).strip()):
                raise DPOConfigError(f"{path} row {i}: empty chosen or rejected text")
            if chosen == rejected:
                raise DPOConfigError(f"{path} row {i}: chosen and rejected are the same text (no preference)")
        total += len(table[columns[0]])
    return total


def check_freeze(config: Any, prefix: str = "actor_rollout_ref.actor") -> None:
    """`<prefix>.freeze_vision_tower=true` needs the freezing engine config and an FSDP that allows frozen weights."""
    if not _get(config, f"{prefix}.freeze_vision_tower", False):
        return
    target = _get(config, f"{prefix}.fsdp_config._target_")
    if target != FREEZE_TARGET:
        raise DPOConfigError(
            f"{prefix}.freeze_vision_tower=true needs {prefix}.fsdp_config._target_={FREEZE_TARGET} (verl's own "
            f"engine never reads the key); got {target!r}"
        )
    if _get(config, f"{prefix}.fsdp_config.freeze_vision_tower") is not True:
        raise DPOConfigError(f"{prefix}.fsdp_config.freeze_vision_tower must be ${{..freeze_vision_tower}} (true)")
    strategy = _get(config, f"{prefix}.strategy")
    if strategy == "fsdp" and not _get(config, f"{prefix}.fsdp_config.use_orig_params", False):
        raise DPOConfigError(
            f"{prefix}.strategy=fsdp (FSDP1) flattens frozen and trainable weights together; set {prefix}.strategy="
            f"fsdp2, or {prefix}.fsdp_config.use_orig_params=true"
        )


def _share(count: int, total: int) -> str:
    return f"{count} of {total} ({count / max(total, 1):.1%})"


def check_data_sizes(config: Any, dpo: DPOConfig) -> dict[str, int]:
    """The training rows against the batch size and the length limits, counted with verl's own dataset and the
    model's tokenizer (what the run would see after Ray starts). Returns the counts.

    * prompts over `data.max_prompt_length` (verl's `RLHFDataset` length, images included): dropped by
      `data.filter_overlong_prompts`, a crash with `data.truncation=error`, else truncated; refused above
      `dpo.max_overlong_share` of the rows;
    * rows left vs `data.train_batch_size`: fewer gives verl's dataloader (drop_last) no batch, and the run dies with
      a ZeroDivisionError after Ray starts;
    * offline pairs (source offline/mixed) with a chosen or rejected text over the response length (its tokens + the
      end-of-turn token, as `recipe/pivot/agent_loop.py` teacher-forces it): refused above `dpo.max_overlong_share`.
    """
    import pyarrow.parquet as pq
    from verl.trainer.ppo.utils import create_rl_dataset
    from verl.utils import hf_processor, hf_tokenizer

    files = _get(config, "data.train_files")
    files = [files] if isinstance(files, str) else list(files)
    rows = sum(pq.ParquetFile(path).metadata.num_rows for path in files)
    model = str(_get(config, "actor_rollout_ref.model.path"))
    trust = bool(_get(config, "actor_rollout_ref.model.trust_remote_code", False))
    tokenizer = hf_tokenizer(model, trust_remote_code=trust)
    processor = hf_processor(model, trust_remote_code=trust, use_fast=True)
    data = OmegaConf.merge(config.data, {"filter_overlong_prompts": True})  # verl's filter, its workers
    within = len(create_rl_dataset(files, data, tokenizer, processor, is_train=True))
    long_prompts = rows - within
    limit, share = _get(config, "data.max_prompt_length"), dpo.max_overlong_share
    where = f"data.train_files={files}"
    filtered = bool(_get(config, "data.filter_overlong_prompts", False))
    if long_prompts and not filtered and _get(config, "data.truncation", "error") == "error":
        raise DPOConfigError(
            f"{where}: {_share(long_prompts, rows)} prompts are over data.max_prompt_length={limit} tokens and "
            "data.truncation=error would stop the run at the first one; raise data.max_prompt_length or set "
            "data.filter_overlong_prompts=true"
        )
    if long_prompts > share * rows:
        raise DPOConfigError(
            f"{where}: {_share(long_prompts, rows)} prompts are over data.max_prompt_length={limit} tokens (dropped "
            f"or truncated), more than dpo.max_overlong_share={share}; raise data.max_prompt_length or the share"
        )
    kept = within if filtered else rows
    batch = int(_get(config, "data.train_batch_size"))
    if kept < batch:
        raise DPOConfigError(
            f"{where}: {kept} training rows (after verl's overlong-prompt filter) < data.train_batch_size={batch}: "
            "verl's dataloader drops the incomplete batch, so there is no step and the run would die with a "
            f"ZeroDivisionError after Ray starts; set data.train_batch_size <= {kept} (ppo_mini_batch_size follows)"
        )
    counts = {"rows": rows, "long_prompts": long_prompts, "pairs": 0, "long_pairs": 0}
    if dpo.pairs.source == "online":
        return counts
    length = int(
        _get(config, "actor_rollout_ref.rollout.response_length", None) or _get(config, "data.max_response_length")
    )
    columns = [dpo.pairs.chosen_column, dpo.pairs.rejected_column]
    for path in files:
        table = pq.read_table(path, columns=columns).to_pydict()
        for chosen, rejected in zip(*(table[c] for c in columns), strict=True):
            texts = [t for t in (chosen, rejected) if isinstance(t, str) and t.strip()]
            if len(texts) < 2:
                continue  # mixed source: an online row
            counts["pairs"] += 1
            sizes = [len(tokenizer.encode(t, add_special_tokens=False)) + 1 for t in texts]
            counts["long_pairs"] += int(max(sizes) > length)
    if counts["long_pairs"] > share * counts["pairs"]:
        raise DPOConfigError(
            f"{where}: {_share(counts['long_pairs'], counts['pairs'])} offline pairs have a chosen or rejected text "
            f"over the response length ({length} tokens with the end-of-turn token), truncated when teacher-forced, "
            f"more than dpo.max_overlong_share={share}; raise data.max_response_length or the share"
        )
    return counts


def validate_dpo_run(config: Any) -> DPOConfig:
    """All start-up checks of a DPO run; returns the parsed `dpo:` section."""
    dpo = dpo_config(config)
    check_equivalence(config)
    check_pairs(config, dpo)
    check_freeze(config)
    check_data_sizes(config, dpo)
    return dpo
