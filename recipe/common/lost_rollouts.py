"""Rollouts verl's v1 loop lost: a failed request drops its response, and the step trains on the rest.

verl 0.9.1's `AgentLoopWorkerTQ._run_prompt` marks a prompt whose sessions raised as `failure` and only logs the
traceback; with `...replay_buffer.sync_refill_failed_groups=false` (verl's default) the replay buffer still hands the
group's surviving responses to the trainer (`trainer/ppo/v1/replay_buffer.py`). The step then runs on a smaller batch
and GRPO normalises each short group over fewer responses — with nothing in the metrics. Every recipe's trainer mode
counts them (`SyncTrainerMode._compute_advantage`):

- `recipe/lost_rollouts`: responses missing from the step's groups (`rollout.n` per prompt, minus what arrived);
- `recipe/incomplete_groups`: prompts with fewer than `rollout.n` responses;

and `domain_recipe.lost_rollouts` says what a loss does: `warn` (default: one warning per step naming the counts, the
step goes on as verl's does) or `error` (the run stops at that step).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from omegaconf import OmegaConf

POLICY_KEY = "domain_recipe.lost_rollouts"
POLICIES = ("warn", "error")
logger = logging.getLogger(__name__)


class LostRolloutsError(RuntimeError):
    """`domain_recipe.lost_rollouts=error` and a step lost responses."""


def lost_rollout_counts(keys: Sequence[str], n: int, tags: Sequence[dict] = ()) -> dict[str, int]:
    """Count the responses missing from a step's groups.

    Args:
        keys: the batch's TransferQueue keys, verl's `{uid}_{session}_{index}` (a uid has no `_`: verl's uuid4 strings;
            `index` > 0 only for agent loops with several outputs per session).
        n: responses per prompt (`actor_rollout_ref.rollout.n`).
        tags: the keys' tags; those tagged `is_padding` (verl's no-op samples that make the batch divisible by the
            data-parallel size, `trainer/ppo/padding_utils.py`) are not a group. Empty: no key is padding.

    Returns:
        `recipe/lost_rollouts` (sum over prompts of n minus its distinct sessions, never negative) and
        `recipe/incomplete_groups` (prompts with fewer than n sessions).
    """
    padding = [bool(tag.get("is_padding", False)) for tag in tags] or [False] * len(keys)
    sessions: dict[str, set[str]] = defaultdict(set)
    for key, is_padding in zip(keys, padding, strict=True):
        if is_padding:
            continue
        parts = str(key).rsplit("_", 2)
        uid, session = (parts[0], parts[1]) if len(parts) == 3 else (str(key), "0")  # another layout: one per key
        sessions[uid].add(session)
    short = [n - len(found) for found in sessions.values() if len(found) < n]
    return {"recipe/lost_rollouts": sum(short), "recipe/incomplete_groups": len(short)}


def lost_rollouts_policy(config: Any) -> str:
    """`domain_recipe.lost_rollouts` (absent: `warn`); raises ValueError naming the key for another value."""
    policy = OmegaConf.select(config, POLICY_KEY, default=None) if OmegaConf.is_config(config) else None
    policy = "warn" if policy is None else policy
    if policy not in POLICIES:
        raise ValueError(f"{POLICY_KEY}={policy!r}: choose one of {', '.join(POLICIES)}")
    return policy


def check_lost_rollouts(
    keys: Sequence[str], n: int, policy: str, tags: Sequence[dict] = (), step: int | None = None
) -> dict[str, int]:
    """The counts of `lost_rollout_counts`; a loss warns (`policy="warn"`) or raises `LostRolloutsError` (`"error"`)."""
    counts = lost_rollout_counts(keys, n, tags)
    if counts["recipe/lost_rollouts"]:
        message = (
            f"step {step}: {counts['recipe/lost_rollouts']} of the step's responses were lost "
            f"({counts['recipe/incomplete_groups']} prompts with fewer than rollout.n={n}; the rollout's traceback is "
            f"in the log above); the step trains on the rest, as verl does"
        )
        if policy == "error":
            raise LostRolloutsError(f"{message}. Set {POLICY_KEY}=warn to go on.")
        logger.warning("%s. Set %s=error to stop instead.", message, POLICY_KEY)
    return counts
