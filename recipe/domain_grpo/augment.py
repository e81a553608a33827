"""Agent-loop options of two baselines: GRPO + data augmentation (`grpo_da`) and the output-level constraint (`oc`).

Config (recipe plumbing, not a method option of `domain:`; set by `config/method/grpo_da.yaml` / `oc.yaml`)::

    domain_recipe:
      augment: {enable, seed}           # grpo_da: generate (and train) on T(x) instead of x
      oc: {enable, weight, greedy}      # oc: a 2nd response on T(x); reward + weight · agreement(answer x, answer T(x))
      rollout_seed: null                # int: seed every rollout request (vLLM's per-request `seed`), reproducible

Both draw T from the row's whitelist (`extra_info.transforms`) ∩ `domain.transforms.names` (identity excluded), with
`verl_ext.transforms.draw_transform`, keyed by the dataset row (data_source + extra_info.index), the step (verl passes
`global_steps` to agent loops) and `seed`, so a run is reproducible. verl 0.9.1 does not hand an agent loop the
validate flag, so the split rule (`is_training_split`) tells them apart: a row is training data when its
`extra_info.split` (written by data_prep) is absent or "train" in any case with any surrounding spaces ("Train",
" TRAIN "); any other value (e.g. "val", "test", or a user's own split name) marks a held-out row, which is never
augmented, gets no OC response and no DC/DR view. Start-up refuses a training file in which no row is training data
(`recipe/domain_grpo/startup.py:check_rows_get_a_view`); `samples_without_view` counts, per step, the training samples
that still got no view (held-out split, or no image).

How OC reaches the reward: the agent loop puts the decoded T(x) response in `extra_fields["oc_transformed_response"]`;
verl's reward loop sends `extra_fields` as `tool_extra_fields`, and its reward managers (naive, limited, remote) merge
them into the `extra_info` given to the custom reward function (`recipe/domain_grpo/oc_reward.py`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from recipe.common.lost_rollouts import POLICIES
from recipe.domain_grpo.keys import VIEW_KEY
from verl_ext.config_values import check_field_values
from verl_ext.transforms import apply_transform, draw_transform

OC_RESPONSE_KEY = "oc_transformed_response"
OC_TRANSFORM_KEY = "oc_transform"
AUGMENT_TRANSFORM_KEY = "augment_transform"
OC_REWARD_FILE = "oc_reward.py"
TRAINING_SPLIT = "train"
DOMAIN_VIEW_KEY = VIEW_KEY  # extra_fields["domain_view"]: the sample's DC/DR view specs (keys.py)


class AgentExtrasConfigError(ValueError):
    """A `domain_recipe.augment` / `domain_recipe.oc` setting is invalid; the message says what to change."""


@dataclass(frozen=True)
class AugmentConfig:
    """`domain_recipe.augment`: GRPO + data augmentation (the `grpo_da` baseline).

    Attributes:
        enable: replace each training prompt's images by T(x) before generation; the actor then trains on T(x)
            as if it were the original (all G responses of a prompt see the same T).
        seed: mixed into the per-prompt draw.
    """

    enable: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        check_field_values(self, "domain_recipe.augment", AgentExtrasConfigError)


@dataclass(frozen=True)
class OutputConstraintConfig:
    """`domain_recipe.oc`: output-level constraint (the `oc` baseline, paper Table 7).

    Attributes:
        enable: generate a second response on T(x) for every training response and reward answer agreement.
        weight: reward += weight · oc_agreement(answer on x, answer on T(x)) (`verl_ext.rewards.oc_agreement`).
        greedy: the T(x) response is greedy (temperature 0); false samples it with the rollout's parameters.
    """

    enable: bool = False
    weight: float = 1.0
    greedy: bool = True

    def __post_init__(self) -> None:
        check_field_values(self, "domain_recipe.oc", AgentExtrasConfigError)
        if not self.weight >= 0:
            raise AgentExtrasConfigError(f"domain_recipe.oc.weight={self.weight} must be >= 0")


def _section(cls: type, key: str, values: Mapping[str, Any] | None) -> Any:
    """Build `cls` from a mapping, naming unknown keys."""
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise AgentExtrasConfigError(f"domain_recipe.{key}: unknown key(s) {unknown}; known: {sorted(known)}")
    return cls(**values)


def rollout_seed_from_config(config: Any) -> int | None:
    """`domain_recipe.rollout_seed`: None (the rollout engine's own randomness) or an int.

    With an int, the recipe's agent loop sends each request a sampling seed drawn from (rollout_seed, row, response
    of the group, step) — vLLM's per-request `SamplingParams.seed` — so a sample's tokens do not depend on which
    replica serves it or in what order: runs with a different number of ranks or layouts sample the same batch.
    With null and `domain_recipe.deterministic=true`, `actor_rollout_ref.rollout.seed` is used.
    """
    value = (config.get("domain_recipe") or {}).get("rollout_seed")
    if value is None and (config.get("domain_recipe") or {}).get("deterministic"):
        value = ((config.get("actor_rollout_ref") or {}).get("rollout") or {}).get("seed", 0)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise AgentExtrasConfigError(f"domain_recipe.rollout_seed={value!r} must be an integer or null")
    return int(value)


def extras_from_config(config: Any) -> tuple[AugmentConfig, OutputConstraintConfig]:
    """Parse `domain_recipe.augment` and `domain_recipe.oc` from the run config (absent sections: off)."""
    from omegaconf import OmegaConf

    recipe = config.get("domain_recipe") or {}
    plain = OmegaConf.to_container(recipe, resolve=True) if OmegaConf.is_config(recipe) else dict(recipe)
    known = {"actor_rollout_ref_worker", "augment", "oc", "rollout_seed", "deterministic", "lost_rollouts"}
    unknown = sorted(set(plain) - known)
    if unknown:
        raise AgentExtrasConfigError(f"domain_recipe: unknown key(s) {unknown}; known: {sorted(known)}")
    if plain.get("lost_rollouts", "warn") not in POLICIES:  # recipe/common/lost_rollouts.py
        raise AgentExtrasConfigError(
            f"domain_recipe.lost_rollouts={plain['lost_rollouts']!r}: choose one of {', '.join(POLICIES)}"
        )
    if not isinstance(plain.get("deterministic", False), bool):
        raise AgentExtrasConfigError(f"domain_recipe.deterministic={plain['deterministic']!r} must be true or false")
    augment = _section(AugmentConfig, "augment", plain.get("augment"))
    oc = _section(OutputConstraintConfig, "oc", plain.get("oc"))
    if augment.enable and oc.enable:
        raise AgentExtrasConfigError("domain_recipe.augment.enable and domain_recipe.oc.enable: choose one baseline")
    return augment, oc


def validate_agent_extras(config: Any, row_whitelists: Sequence[Sequence[str]] | None = None) -> None:
    """Start-up checks of the two options against the rest of the run; raises `AgentExtrasConfigError`.

    Args:
        config: the full run config.
        row_whitelists: each training row's `extra_info.transforms` (`startup.training_row_whitelists`); each row
            must allow at least one configured non-identity transform.
    """
    augment, oc = extras_from_config(config)
    if not (augment.enable or oc.enable):
        return
    key = "augment" if augment.enable else "oc"
    loop = str(config.actor_rollout_ref.rollout.agent.default_agent_loop)
    if loop != "domain_single_turn_agent":
        raise AgentExtrasConfigError(
            f"domain_recipe.{key}.enable=true runs in the recipe's agent loop: set "
            f"actor_rollout_ref.rollout.agent.default_agent_loop=domain_single_turn_agent (got {loop})"
        )
    names = [str(n) for n in config.domain.transforms.names]
    for i, allowed in enumerate(row_whitelists or []):
        if not candidate_transforms(names, allowed):
            raise AgentExtrasConfigError(
                f"domain_recipe.{key}: training row {i} allows {sorted(allowed)}, none of domain.transforms.names="
                f"{names}; set domain.transforms.names to transforms the dataset allows (data_prep/README.md)"
            )
    if oc.enable:
        path = config.reward.custom_reward_function.get("path")
        if path is None or Path(str(path)).name != OC_REWARD_FILE:
            raise AgentExtrasConfigError(
                f"domain_recipe.oc.enable=true needs reward.custom_reward_function.path=recipe/domain_grpo/"
                f"{OC_REWARD_FILE} (it adds the agreement term; got {path})"
            )


def candidate_transforms(names: Sequence[str], row_whitelist: Sequence[str]) -> list[str]:
    """The configured non-identity transforms this row allows (configured order)."""
    allowed = set(row_whitelist)
    return [n for n in names if n in allowed and n != "identity"]


def is_training_split(split: Any) -> bool:
    """The split rule: a row is training data when its `extra_info.split` is None (absent) or, as a string, equals
    "train" ignoring case and surrounding whitespace. data_prep writes "train" / "val" / "test"."""
    return split is None or str(split).strip().lower() == TRAINING_SPLIT


def is_training_sample(kwargs: Mapping[str, Any]) -> bool:
    """Whether an agent-loop call is a training rollout: no truthy `validate` kwarg and the row's `extra_info.split`
    passes `is_training_split` (verl does not pass the validate flag to agent loops; data_prep writes `split`)."""
    if kwargs.get("validate", False):
        return False
    return is_training_split((kwargs.get("extra_info") or {}).get("split"))


def samples_without_view(extra_fields: Sequence[Mapping[str, Any] | None], padding: Sequence[bool] = ()) -> int:
    """How many samples of a training batch carry no DC/DR view (`extra_fields["domain_view"]` missing or empty).

    For the trainer's per-step metric: such a sample contributes DC = 0 and D_i = 0 (its row's split is held-out
    by `is_training_split`, or it has no image). verl's padding samples (`padding[i]` true) are not counted.

    Args:
        extra_fields: `[B]` each sample's `extra_fields` (the agent loop's), in batch order.
        padding: `[B]` whether the sample is verl's padding (its `is_padding` tag); empty: none is.
    """
    pad = list(padding) or [False] * len(extra_fields)
    return sum(
        1
        for extra, is_pad in zip(extra_fields, pad, strict=True)
        if not is_pad and not (extra or {}).get(DOMAIN_VIEW_KEY)
    )


def draw_for_sample(names: Sequence[str], row_whitelist: Sequence[str], seed: int, key: str, step: int = 0) -> str:
    """One transform for a sample: uniform over `candidate_transforms`, deterministic in (seed, step, key).

    Raises:
        AgentExtrasConfigError: the row allows none of `names`.
    """
    candidates = candidate_transforms(names, row_whitelist)
    if not candidates:
        raise AgentExtrasConfigError(
            f"row allows {sorted(row_whitelist)}, none of domain.transforms.names={list(names)}; "
            "set domain.transforms.names to transforms the dataset allows"
        )
    return draw_transform(candidates, seed, step, key)


def transform_images(
    images: Sequence[Image.Image], name: str, seed: int = 0, params: Mapping[str, Any] | None = None
) -> list[Image.Image]:
    """Every image of a sample transformed by `name` (geometric ones are lossless pixel permutations)."""
    return [apply_transform(image, name, seed=seed, params=params) for image in images]
