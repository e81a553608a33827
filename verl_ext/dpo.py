"""DPO (Rafailov et al. 2023) as a verl policy gradient: pairing, Δ, advantages, loss value and metrics.

Paper used by the study: PIVOT (arXiv 2510.16333, "RL makes MLLMs see better than SFT"), DPO with β = 0.1 on the whole
model (vision encoder included):

    L_DPO = −log σ(β Δ),   Δ = [log π(y_c) − log π_ref(y_c)] − [log π(y_r) − log π_ref(y_r)]
    ∇L_DPO = −β σ(−β Δ) [∇log π(y_c) − ∇log π(y_r)]

verl's PPO surrogate with token-sum aggregation, −Σ_t A_t · π(y_t)/π_old(y_t), has the gradient −Σ_t A_t ∇log π(y_t)
at ratio 1 (π = π_old: old log-probs recomputed by the actor, one optimiser step per batch). So per-sequence
advantages A = +β σ(−β Δ)/N on every token of the chosen response and −β σ(−β Δ)/N on the rejected one (0 on
unpaired samples) make verl's own actor update the gradient of the mean DPO loss over the batch's N pairs. The
conditions are checked at start-up (`recipe/pivot/startup.py`); the equivalence is tested in float64 through verl's
`ppo_loss` (`tests/verl_ext/test_dpo_on_cpu.py`).

Registered estimator `dpo` (`algorithm.adv_estimator=dpo`): verl passes estimators only rewards, mask and uid, so the
per-sample coefficients come from the `dpo` trainer mode through :func:`dpo_advantage_inputs`, as `domain_grpo`'s
consistency does (`verl_ext/estimator.py`). Pure module: torch only.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from verl_ext.config_values import check_field_values

ROLES = ("chosen", "rejected", "sampled")  # offline pair members (teacher-forced) or a sampled response
SOURCES = ("online", "offline", "mixed")


class DPOConfigError(ValueError):
    """A `dpo.*` setting (or a verl setting DPO needs) is invalid; the message names the key and what to change."""


@dataclass(frozen=True)
class DPOPairsConfig:
    """Where the pairs come from (`dpo.pairs`).

    Attributes:
        source: "online" (the model's own samples: chosen = correct and well-formed, rejected = wrong and
            well-formed), "offline" (each row's `chosen`/`rejected` text, teacher-forced), "mixed" (per row: offline
            where the row has a pair, online otherwise).
        max_per_prompt: online pairs per prompt at most (disjoint: a sample is in at most one pair).
        correct_key: the reward-extra-info key (the reward function's returned dict) that says "correct".
        well_formed_keys: keys that must all pass for a sample to be well-formed (format, and the answer names a class).
        threshold: a key passes when its value is >= threshold.
        chosen_column / rejected_column: the parquet columns with the offline texts.
    """

    source: str = "online"
    max_per_prompt: int = 1
    correct_key: str = "acc"
    well_formed_keys: tuple[str, ...] = ("format", "answer_valid")
    threshold: float = 1.0
    chosen_column: str = "chosen"
    rejected_column: str = "rejected"

    def __post_init__(self) -> None:
        check_field_values(self, "dpo.pairs", DPOConfigError)
        if self.source not in SOURCES:
            raise DPOConfigError(f"dpo.pairs.source={self.source!r} is not valid; choose one of {list(SOURCES)}")
        if self.max_per_prompt < 1:
            raise DPOConfigError(f"dpo.pairs.max_per_prompt must be >= 1 (got {self.max_per_prompt})")


@dataclass(frozen=True)
class DPOConfig:
    """Everything DPO adds to verl, under the top-level `dpo:` key (mirrored by `recipe/pivot/config`).

    Attributes:
        beta: β of the DPO loss (the paper: 0.1).
        pairs: see `DPOPairsConfig`.
        skip_empty_update: a batch that forms no pair makes no optimiser step (verl would otherwise step with a zero
            gradient, and AdamW's momentum and weight decay would still move the weights).
        max_overlong_share: start-up refuses a run where more than this share of the training prompts are over
            `data.max_prompt_length` (dropped by verl's overlong filter, or truncated), or of the offline pairs have a
            chosen or rejected text over the response length (truncated when teacher-forced: Δ of a cut text).
            0 (default): none may be.
    """

    beta: float = 0.1
    pairs: DPOPairsConfig = field(default_factory=DPOPairsConfig)
    skip_empty_update: bool = True
    max_overlong_share: float = 0.0

    def __post_init__(self) -> None:
        check_field_values(self, "dpo", DPOConfigError)
        if not self.beta > 0:
            raise DPOConfigError(f"dpo.beta must be > 0 (got {self.beta}); the paper uses 0.1")
        if not 0 <= self.max_overlong_share <= 1:
            raise DPOConfigError(f"dpo.max_overlong_share={self.max_overlong_share} must be in [0, 1]")

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any] | None) -> DPOConfig:
        """Build from a plain mapping (e.g. `OmegaConf.to_container(config.dpo)`), rejecting unknown keys."""
        cfg = dict(cfg or {})
        _reject_unknown("dpo", cfg, {"beta", "pairs", "skip_empty_update", "max_overlong_share"})
        pairs = dict(cfg.pop("pairs", None) or {})
        _reject_unknown("dpo.pairs", pairs, {f for f in DPOPairsConfig.__dataclass_fields__})
        if "well_formed_keys" in pairs:
            pairs["well_formed_keys"] = tuple(pairs["well_formed_keys"])
        return cls(pairs=DPOPairsConfig(**pairs), **cfg)


def _reject_unknown(where: str, given: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(given) - known)
    if unknown:
        raise DPOConfigError(f"{where}: unknown key(s) {unknown}; valid keys are {sorted(known)}")


@dataclass(frozen=True)
class Pairs:
    """The pairs of one batch, as sample indices.

    Attributes:
        chosen / rejected: `[P]` sample indices (long).
        offline: `[P]` bool, the pair came from the row's texts (else from the model's samples).
        online_prompts: prompts that had sampled responses to pair.
        skipped_prompts: of those, prompts where no pair formed (counted and skipped).
        broken_offline: prompts with an offline chosen but no rejected sample (or the reverse), skipped.
    """

    chosen: torch.Tensor
    rejected: torch.Tensor
    offline: torch.Tensor
    online_prompts: int = 0
    skipped_prompts: int = 0
    broken_offline: int = 0

    def __len__(self) -> int:
        return int(self.chosen.numel())


def form_pairs(
    group_ids: Sequence[Any],
    roles: Sequence[str],
    correct: torch.Tensor,
    well_formed: torch.Tensor,
    valid: torch.Tensor | None = None,
    max_per_prompt: int = 1,
) -> Pairs:
    """Pairs of a batch: offline pairs from the roles, online pairs from each prompt's sampled responses.

    Args:
        group_ids: `[B]` prompt id of each sample (verl's `uid`), samples in session order within a prompt.
        roles: `[B]` "chosen" / "rejected" (an offline pair's teacher-forced texts) or "sampled".
        correct: `[B]` bool, the sampled answer is correct.
        well_formed: `[B]` bool, the sampled response is well-formed (format, the answer names a class).
        valid: `[B]` bool, False for verl's padding samples (never paired); None: all valid.
        max_per_prompt: online pairs per prompt at most.

    Returns:
        `Pairs`; online pairs zip the prompt's correct and wrong well-formed samples in session order.

    Note:
        Online: chosen = a correct AND well-formed sample, rejected = a wrong but well-formed one (a malformed answer is
        never a member: the preference would teach the format, not the content). A prompt with sampled responses and
        no such pair is counted in `skipped_prompts`. Disjoint pairs keep every sample's coefficient a single ±w.
    """
    n = len(group_ids)
    if not (len(roles) == n == correct.numel() == well_formed.numel()):
        raise ValueError(f"form_pairs: inputs of different lengths ({n}, {len(roles)}, {correct.numel()})")
    bad_roles = sorted(set(roles) - set(ROLES))
    if bad_roles:
        raise ValueError(f"form_pairs: unknown roles {bad_roles}; expected {list(ROLES)}")
    valid = torch.ones(n, dtype=torch.bool) if valid is None else valid.reshape(-1).bool()
    groups: dict[Any, list[int]] = {}
    for i, gid in enumerate(group_ids):
        if valid[i]:
            groups.setdefault(gid, []).append(i)
    members_of: list[tuple[int, int, bool]] = []  # (chosen, rejected, offline)
    online_prompts = skipped = broken = 0
    for members in groups.values():
        offline_c = [i for i in members if roles[i] == "chosen"]
        offline_r = [i for i in members if roles[i] == "rejected"]
        if len(offline_c) != len(offline_r):
            broken += 1
        members_of.extend((c, r, True) for c, r in zip(offline_c, offline_r))
        sampled = [i for i in members if roles[i] == "sampled"]
        if not sampled:
            continue
        online_prompts += 1
        good = [i for i in sampled if correct[i] and well_formed[i]]
        bad = [i for i in sampled if not correct[i] and well_formed[i]]
        k = min(len(good), len(bad), max_per_prompt)
        skipped += int(k == 0)
        members_of.extend((c, r, False) for c, r in zip(good[:k], bad[:k]))
    chosen = torch.tensor([m[0] for m in members_of], dtype=torch.long)
    rejected = torch.tensor([m[1] for m in members_of], dtype=torch.long)
    offline = torch.tensor([m[2] for m in members_of], dtype=torch.bool)
    return Pairs(chosen, rejected, offline, online_prompts, skipped, broken)


def sequence_log_ratio(
    log_probs: torch.Tensor, ref_log_probs: torch.Tensor, response_mask: torch.Tensor
) -> torch.Tensor:
    """log π(y) − log π_ref(y) per sequence: the masked token sum, accumulated in float64.

    Args:
        log_probs: `[B, T]` log π of each response token (verl's `old_log_probs`: the actor at the current weights).
        ref_log_probs: `[B, T]` log π_ref of the same tokens (verl's `ref_log_prob`).
        response_mask: `[B, T]` 1 on response tokens.

    Returns:
        `[B]` float64.
    """
    mask = response_mask.to(torch.float64)  # [B, T]
    return ((log_probs.double() - ref_log_probs.double()) * mask).sum(-1)  # [B]


def dpo_delta(log_ratio: torch.Tensor, pairs: Pairs) -> torch.Tensor:
    """Δ of each pair, `[P]`: log-ratio of the chosen sample minus that of the rejected one (`log_ratio` `[B]`)."""
    return log_ratio[pairs.chosen] - log_ratio[pairs.rejected]  # [P]


def dpo_loss(delta: torch.Tensor, beta: float) -> torch.Tensor:
    """The DPO loss of each pair, `[P]`: −log σ(β Δ) (`delta` `[P]`)."""
    return -F.logsigmoid(beta * delta)  # [P]


def dpo_sample_coefficients(delta: torch.Tensor, pairs: Pairs, beta: float, batch_size: int) -> torch.Tensor:
    """Each sample's advantage, `[B]`: +β σ(−β Δ)/N for a chosen sample, −β σ(−β Δ)/N for a rejected one, else 0.

    Args:
        delta: `[P]` Δ of each pair (`dpo_delta`).
        pairs: the batch's pairs (N = len(pairs)).
        beta: β.
        batch_size: B.

    Note:
        Normalised by the number of pairs N, so the summed gradient is that of the MEAN DPO loss over the batch's
        pairs (TRL's reduction). With no pair every coefficient is 0.
    """
    coef = torch.zeros(batch_size, dtype=delta.dtype, device=delta.device)  # [B]
    if len(pairs) == 0:
        return coef
    weight = beta * torch.sigmoid(-beta * delta.detach()) / len(pairs)  # [P]
    coef.index_add_(0, pairs.chosen.to(delta.device), weight)
    coef.index_add_(0, pairs.rejected.to(delta.device), -weight)
    return coef


def dpo_metrics(log_ratio: torch.Tensor, pairs: Pairs, beta: float) -> dict[str, float]:
    """`dpo/*` metrics of a batch (`log_ratio` `[B]`); implicit rewards r = β · log-ratio, as TRL reports them.

    Keys: `loss` (mean −log σ(βΔ)), `reward_margin` (mean β Δ), `accuracy` (share of pairs with Δ > 0, ties count 0),
    `chosen_reward`, `rejected_reward` (means), `pairs`, `pairs_offline`, `pairs_online`, `prompts_online`,
    `prompts_skipped`, `offline_broken`. Loss-type keys are NaN when no pair formed.
    """
    n = len(pairs)
    out = {
        "dpo/pairs": float(n),
        "dpo/pairs_offline": float(pairs.offline.sum()),
        "dpo/pairs_online": float(n - int(pairs.offline.sum())),
        "dpo/prompts_online": float(pairs.online_prompts),
        "dpo/prompts_skipped": float(pairs.skipped_prompts),
        "dpo/offline_broken": float(pairs.broken_offline),
    }
    if n == 0:
        nan = float("nan")
        keys = ("loss", "reward_margin", "accuracy", "chosen_reward", "rejected_reward")
        return out | {f"dpo/{k}": nan for k in keys}
    delta = dpo_delta(log_ratio, pairs)  # [P]
    return out | {
        "dpo/loss": dpo_loss(delta, beta).mean().item(),
        "dpo/reward_margin": (beta * delta).mean().item(),
        "dpo/accuracy": (delta > 0).double().mean().item(),
        "dpo/chosen_reward": (beta * log_ratio[pairs.chosen]).mean().item(),
        "dpo/rejected_reward": (beta * log_ratio[pairs.rejected]).mean().item(),
    }


# --- the `dpo` advantage estimator -------------------------------------------------------------------------------

_COEFFICIENTS: contextvars.ContextVar[torch.Tensor | None] = contextvars.ContextVar("dpo_coefficients", default=None)


@contextlib.contextmanager
def dpo_advantage_inputs(coefficients: torch.Tensor) -> Iterator[None]:
    """Make each sample's DPO coefficient (`[B]`, batch row order) visible to the `dpo` estimator inside the block."""
    token = _COEFFICIENTS.set(coefficients)
    try:
        yield
    finally:
        _COEFFICIENTS.reset(token)


def compute_dpo_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    config: Any = None,
    index: Any = None,
    dpo_coefficients: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """verl estimator `dpo`: each sample's coefficient on every one of its response tokens.

    Args:
        token_level_rewards: `[B, T]` (unused: the preference, not the reward, drives DPO).
        response_mask: `[B, T]`.
        config: verl's `algorithm` config (unused).
        index: `[B]` uid (unused).
        dpo_coefficients: `[B]`; None reads them from `dpo_advantage_inputs`.

    Returns:
        (advantages, returns), each `[B, T]`, equal; float32 (verl's mask is an integer tensor), or the mask's dtype
        when it is floating point (the float64 tests).
    """
    coef = dpo_coefficients if dpo_coefficients is not None else _COEFFICIENTS.get()
    if coef is None:
        raise RuntimeError(
            "algorithm.adv_estimator=dpo needs the per-sample DPO coefficients, which the `dpo` trainer mode provides: "
            "launch through recipe/pivot (trainer.v1.trainer_mode=dpo), or wrap the call in "
            "verl_ext.dpo.dpo_advantage_inputs(...)"
        )
    coef = coef.reshape(-1)
    if coef.numel() != response_mask.shape[0]:
        raise ValueError(f"dpo: {coef.numel()} coefficients for a batch of {response_mask.shape[0]} samples")
    dtype = response_mask.dtype if response_mask.is_floating_point() else torch.float32
    advantages = coef.to(device=response_mask.device, dtype=dtype).unsqueeze(-1) * response_mask  # [B, T]
    return advantages, advantages
