"""Single-turn agent loop that also prepares each sample's transformed view T(x) for the actor.

Registered with verl's agent-loop registry as `domain_single_turn_agent` (select it with
`actor_rollout_ref.rollout.agent.default_agent_loop=domain_single_turn_agent`). Generation is verl's own
`SingleTurnAgentLoop` (vLLM on GPU); afterwards, where the PIL images and the processor already are, it draws the
sample's transform and runs the model's image processor on T(x) (`verl_ext.views.transformed_view`). The result rides
in `extra_fields["domain_view"]` to the actor's micro-batches, where the worker runs the policy on it teacher-forced
on the same tokens. Validation samples get no transformed view.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import OmegaConf
from verl.experimental.agent_loop.agent_loop import AgentLoopOutput, register
from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop

from verl_ext.config import DomainConfig
from verl_ext.transforms import draw_transform
from verl_ext.views import transformed_view

AGENT_NAME = "domain_single_turn_agent"
VIEW_KEY = "domain_view"


def choose_transform(domain: DomainConfig, row_whitelist: list[str], step: int, row_key: str) -> str:
    """The transform of one sample at one step: the configured names this row allows, drawn per `domain.transforms`."""
    candidates = [name for name in domain.transforms.names if name in row_whitelist and name != "identity"]
    if domain.transforms.mode == "fixed":
        return domain.transforms.names[0]
    return draw_transform(candidates, domain.transforms.seed, step, row_key)


@register(AGENT_NAME)
class DomainSingleTurnAgentLoop(SingleTurnAgentLoop):
    """verl's single-turn loop + the transformed view of the sample's images in `extra_fields["domain_view"]`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        section = self.config.get("domain")
        self.domain = DomainConfig.from_dict(OmegaConf.to_container(section, resolve=True) if section else {})

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        output = await super().run(sampling_params, **kwargs)
        images = (output.multi_modal_data or {}).get("images")
        if not self.domain.needs_transformed_view or kwargs.get("validate", False) or not images:
            return output
        extra_info = kwargs.get("extra_info") or {}
        row_key = f"{kwargs.get('uid', extra_info.get('index'))}_{kwargs.get('session_id', 0)}"
        step = int(kwargs.get("global_steps", 0))
        name = choose_transform(self.domain, list(extra_info.get("transforms", [])), step, row_key)
        input_ids = torch.tensor(output.prompt_ids + output.response_ids, dtype=torch.long)  # [L]
        view = transformed_view(self.processor, images, input_ids, torch.ones_like(input_ids), name)
        output.extra_fields[VIEW_KEY] = {"transform": name, **view}
        return output
