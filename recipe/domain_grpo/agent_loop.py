"""Single-turn agent loop that also prepares each sample's transformed view T(x) for the actor.

Registered with verl's agent-loop registry as `domain_single_turn_agent` (select it with
`actor_rollout_ref.rollout.agent.default_agent_loop=domain_single_turn_agent`). Generation is verl's own
`SingleTurnAgentLoop` (vLLM on GPU); afterwards, where the PIL images and the processor already are, it draws the
sample's transform (seeded by row, response and step) and puts its name and a seed for its parameters in
`extra_fields["domain_view"]` — a few bytes; the actor builds the view itself from the sample's processed pixels
(`recipe/domain_grpo/micro_batch.py`) and runs the policy on it teacher-forced on the same tokens. Validation samples
get no transformed view: a row is a training row by the split rule of `augment.is_training_split` (its
`extra_info.split` absent or "train" in any case).

Validation rows that carry `domain_val_view=T` (the trainer mode's invariance pass, recipe/domain_grpo/validation.py)
are answered on T(x): the images are transformed before verl's processor, as with `augment`.

Two baseline options (`recipe/domain_grpo/augment.py`, `domain_recipe.augment` / `domain_recipe.oc`, off by default):
`augment` (grpo_da) replaces a training prompt's images by T(x) before generation, so the actor trains on T(x) as the
original; `oc` generates a second response on T(x) and hands its text to the reward function in
`extra_fields["oc_transformed_response"]` (verl's reward managers merge `extra_fields` into `extra_info`).
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

from omegaconf import OmegaConf
from verl.experimental.agent_loop.agent_loop import AgentLoopOutput, register
from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop

from recipe.domain_grpo.augment import (
    AUGMENT_TRANSFORM_KEY,
    OC_RESPONSE_KEY,
    OC_TRANSFORM_KEY,
    candidate_transforms,
    draw_for_sample,
    extras_from_config,
    is_training_sample,
    rollout_seed_from_config,
    transform_images,
)
from recipe.domain_grpo.keys import VAL_VIEW_FIELD, VIEW_KEY
from verl_ext.config import DomainConfig
from verl_ext.transforms import draw_seed

AGENT_NAME = "domain_single_turn_agent"


def sample_key(kwargs: dict[str, Any], purpose: str, per_response: bool = True) -> tuple[str, int]:
    """(key, step) of a seeded draw: the dataset row (data_source + extra_info.index), the response of the group
    (`session_id`, unless the whole group shares the draw) and the step (verl passes `global_steps` to agent loops).
    The uid is random per run, so it is only the fallback for rows without an index."""
    extra_info = kwargs.get("extra_info") or {}
    key = f"{purpose}:{kwargs.get('data_source', '')}:{extra_info.get('index', kwargs.get('uid'))}"
    if per_response:
        key += f"_{kwargs.get('session_id', 0)}"
    return key, int(kwargs.get("global_steps", 0))


def choose_transforms(domain: DomainConfig, row_whitelist: list[str], key: str, step: int) -> list[str]:
    """The transforms of a sample's DC/DR views: `[names[0]]` (fixed), every allowed non-identity name (mixture), or
    one seeded draw over the row's allowed names (sample)."""
    if domain.transforms.mode == "fixed":
        return [domain.transforms.names[0]]
    if domain.transforms.mode == "mixture":
        return candidate_transforms(domain.transforms.names, row_whitelist)
    return [draw_for_sample(domain.transforms.names, row_whitelist, domain.transforms.seed, key, step)]


@register(AGENT_NAME)
class DomainSingleTurnAgentLoop(SingleTurnAgentLoop):
    """verl's single-turn loop + the transformed view of the sample's images in `extra_fields["domain_view"]`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        section = self.config.get("domain")
        self.domain = DomainConfig.from_dict(OmegaConf.to_container(section, resolve=True) if section else {})
        self.augment, self.oc = extras_from_config(self.config)
        self.rollout_seed = rollout_seed_from_config(self.config)
        # set per call by `run`, read by `process_multi_modal_info` (verl builds one agent-loop object per sample)
        self._augment_name: str | None = None
        self._augment_seed = 0

    async def process_multi_modal_info(self, messages: list[dict]) -> dict:
        """verl's image extraction; with `domain_recipe.augment` on, the images are replaced by T(x)."""
        data = await super().process_multi_modal_info(messages)
        if self._augment_name is not None and data.get("images"):
            params = self.domain.transforms.params.get(self._augment_name)
            data["images"] = transform_images(data["images"], self._augment_name, self._augment_seed, params)
        return data

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        extra_info = kwargs.get("extra_info") or {}
        whitelist = list(extra_info.get("transforms", []))
        names = list(self.domain.transforms.names)
        if self.augment.enable and is_training_sample(kwargs):  # one T per prompt: the group shares the image
            key, step = sample_key(kwargs, "augment", per_response=False)
            self._augment_name = draw_for_sample(names, whitelist, self.augment.seed, key, step)
            self._augment_seed = draw_seed(self.augment.seed, step, key)
        view = kwargs.get(VAL_VIEW_FIELD)
        if view is not None and view != "identity":  # the trainer's val-domain pass: answer the row on T(x)
            self._augment_name = str(view)
            self._augment_seed = draw_seed(self.domain.transforms.seed, -1, f"val:{(extra_info or {}).get('index')}")
        if self.rollout_seed is not None:  # vLLM's per-request seed (and the CPU rollout's)
            key, step = sample_key(kwargs, "rollout")
            sampling_params = {**sampling_params, "seed": draw_seed(self.rollout_seed, step, key) % (2**31)}
        output = await super().run(sampling_params, **kwargs)
        if self._augment_name is not None:
            output.extra_fields[AUGMENT_TRANSFORM_KEY] = self._augment_name
        if self.oc.enable:
            text, name = await self._oc_response(sampling_params, output, kwargs, names, whitelist)
            output.extra_fields.update({OC_RESPONSE_KEY: text, OC_TRANSFORM_KEY: name})
        return self._add_domain_view(output, kwargs)

    async def _oc_response(
        self,
        sampling_params: dict[str, Any],
        output: AgentLoopOutput,
        kwargs: dict[str, Any],
        names: list[str],
        whitelist: list[str],
    ) -> tuple[str | None, str | None]:
        """The decoded response on T(x) and T's name; (None, None) for validation or image-less samples."""
        images = (output.multi_modal_data or {}).get("images")
        if not is_training_sample(kwargs) or not images:
            return None, None
        key, step = sample_key(kwargs, "oc")
        name = draw_for_sample(names, whitelist, self.domain.transforms.seed, key, step)
        seed = draw_seed(self.domain.transforms.seed, step, key)
        view_images = transform_images(images, name, seed, self.domain.transforms.params.get(name))
        prompt_ids = await self.ct_build_initial_tokens(list(kwargs["raw_prompt"]), images=view_images)
        params = dict(sampling_params)
        if self.oc.greedy:
            params.update(top_p=1.0, top_k=-1, temperature=0)
        result = await self.server_manager.generate(
            request_id=uuid4().hex, prompt_ids=prompt_ids, sampling_params=params, image_data=view_images
        )
        token_ids = list(result.token_ids)[: self.response_length]
        text = await self.loop.run_in_executor(None, lambda: self.tokenizer.decode(token_ids, skip_special_tokens=True))
        return text, name

    def _add_domain_view(self, output: AgentLoopOutput, kwargs: dict[str, Any]) -> AgentLoopOutput:
        """The DC/DR views' specs `[{"transform", "seed"}]` in `extra_fields["domain_view"]` (when needed)."""
        images = (output.multi_modal_data or {}).get("images")
        if not self.domain.needs_transformed_view or not is_training_sample(kwargs) or not images:
            return output
        extra_info = kwargs.get("extra_info") or {}
        key, step = sample_key(kwargs, "view")
        names = choose_transforms(self.domain, list(extra_info.get("transforms", [])), key, step)
        seed = self.domain.transforms.seed
        output.extra_fields[VIEW_KEY] = [
            {"transform": name, "seed": draw_seed(seed, step, f"{key}:{name}")} for name in names
        ]
        return output
