"""Reward of the `oc` baseline (output-level constraint): Visual-RFT's reward + weight · answer agreement across views.

    reward.custom_reward_function.path=recipe/domain_grpo/oc_reward.py   # set by the launch scripts for method=oc
    reward.custom_reward_function.name=compute_score

The response on T(x) comes from the recipe's agent loop (`domain_recipe.oc.enable=true`), which stores its text in
`extra_fields["oc_transformed_response"]`; verl 0.9.1's reward managers (naive/limited/remote) merge the agent loop's
`extra_fields` into `extra_info`. A value of None (validation rows, image-less rows) adds no OC term; a MISSING key is
an error, so a run whose agent loop does not produce the second answer cannot silently train plain GRPO.
The weight: `config/method/oc.yaml` sets `reward.custom_reward_function.reward_kwargs.oc_weight` to
`${domain_recipe.oc.weight}` (verl passes `reward_kwargs` to this function).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from recipe.domain_grpo.augment import OC_RESPONSE_KEY
from verl_ext.rewards import compute_score as base_compute_score
from verl_ext.rewards import is_multi_label, oc_agreement, row_vocabulary


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: str,
    extra_info: Mapping[str, Any] | None = None,
    oc_weight: float = 1.0,
    **kwargs: Any,
) -> dict[str, float]:
    """`verl_ext.rewards.compute_score` + `oc_weight` · `oc_agreement(response on x, response on T(x))`.

    Args:
        data_source, solution_str, ground_truth: as verl passes them.
        extra_info: the row's extra_info merged with the agent loop's extra_fields (needs "oc_transformed_response").
        oc_weight: weight of the agreement term (≥ 0).
        **kwargs: forwarded to `verl_ext.rewards.compute_score` (acc_weight, format_weight, multi_label_metric, ...).

    Returns:
        The base reward's keys plus "oc_agreement" (0 where no T(x) response was made) and "oc_scored" (1 if it was).

    Raises:
        KeyError: `extra_info` has no "oc_transformed_response" (the agent loop's OC option is off).
    """
    if extra_info is None or OC_RESPONSE_KEY not in extra_info:
        raise KeyError(
            f"oc_reward: extra_info has no {OC_RESPONSE_KEY!r}; the OC reward needs the recipe's agent loop with "
            "domain_recipe.oc.enable=true (method=oc) and "
            "actor_rollout_ref.rollout.agent.default_agent_loop=domain_single_turn_agent"
        )
    if not oc_weight >= 0:
        raise ValueError(f"oc_weight={oc_weight} must be >= 0")
    result = base_compute_score(data_source, solution_str, ground_truth, extra_info, **kwargs)
    transformed = extra_info[OC_RESPONSE_KEY]
    agreement = 0.0
    if transformed is not None:
        vocab = row_vocabulary(ground_truth, extra_info)
        agreement = oc_agreement(solution_str, str(transformed), vocab, is_multi_label(data_source, extra_info))
    result["score"] += oc_weight * agreement
    result["oc_agreement"] = agreement
    result["oc_scored"] = float(transformed is not None)
    return result
