"""A CPU rollout backend for verl 0.9.1 built on transformers ``generate`` (tests and the CPU demo only).

verl 0.9.1 only runs rollout in server mode (vLLM / SGLang / TRT-LLM), none of which runs here. This module plugs a
fourth backend, ``hf``, into the two registries verl resolves rollouts through, so the agent loop, load balancer,
weight sync and TransferQueue path stay verl's own:

* ``verl.workers.rollout.base._ROLLOUT_REGISTRY[("hf", "async")]`` -> :class:`HFServerAdapter`, built by
  ``ActorRolloutRefWorker.init_model`` inside each trainer process. In the trainer's ``update_weights`` (naive
  checkpoint engine) it receives the FSDP engine's full per-tensor weights and ships them to its server.
* ``RolloutReplicaRegistry.register("hf", ...)`` -> :class:`HFReplica`, which ``LLMServerManager`` creates; in hybrid
  mode it launches one :class:`HFGenerateServer` Ray actor per replica (named ``hf_server_<replica_rank>``).
* :class:`HFGenerateServer` answers ``generate(prompt_ids, sampling_params, request_id, image_data=...)`` with a
  ``TokenOutput``, like verl's vLLM server. Prompt ids arrive with the image placeholders already expanded by the agent
  loop, so the image processor's ``pixel_values``/``image_grid_thw`` line up with them. Tokens listed in
  ``rollout.engine_kwargs.hf.banned_tokens`` (default: Qwen2.5-VL's vision tokens) are never sampled: a random-weight
  policy that emits ``<|image_pad|>`` breaks the agent loop's position-id recomputation.
* Sampling randomness: a request's own ``seed`` seeds it (the recipe's agent loop sends one drawn from the row, the
  response of the group and the step when ``domain_recipe.rollout_seed`` is set or ``domain_recipe.deterministic`` is
  on). A request without one draws from the server's generator in the order requests arrive, which the asynchronous
  agent loop does not fix: such runs do not reproduce.
* Answer-format stand-in (``rollout.engine_kwargs.hf.answer_tokens: N``, default 0 = off): a random-weight policy never
  writes ``<answer>…</answer>``, so the answer scope of the domain terms (``domain.*.scope=answer``) would be empty.
  With N > 0 a request's response is ``<answer>`` + N tokens sampled from the policy after it (end-of-sequence
  suppressed) + ``</answer>`` + end-of-sequence, for a share ``answer_share`` (default 1) of requests, drawn from the
  request's seeded generator; the others are sampled as usual (no answer: an empty answer scope). The tag and end
  tokens are written, not sampled; the log-probs (when asked for) are the policy's of every response token, from one
  teacher-forced forward pass. Only the layout test uses it.

Selected by ``actor_rollout_ref.rollout.name=hf`` (see ``recipe/domain_grpo/config/stand_in/cpu_tiny.yaml``). Hybrid
mode with ``tensor_model_parallel_size=1`` only; one request is generated at a time per replica.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import ray
import torch
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutMode, RolloutReplica, TokenOutput

from verl_ext.cpu.tiny_qwen25vl import VISION_TOKENS
from verl_ext.rewards import ANSWER_CLOSE, ANSWER_OPEN

logger = logging.getLogger(__name__)

ROLLOUT_NAME = "hf"
SERVER_NAME_PREFIX = "hf_server_"
# Sampling keys the agent loop sends (see AgentLoopWorker.generate_sequences) and what this backend does with them.
# `seed`: a per-request sampling seed, as vLLM's SamplingParams takes it (the recipe's agent loop sets it when
# `domain_recipe.rollout_seed` is set): the same request then samples the same tokens on any replica.
_SAMPLING_KEYS = {
    *("temperature", "top_p", "top_k", "repetition_penalty", "logprobs", "max_tokens", "max_new_tokens", "seed")
}


@dataclass
class HFGenerationSettings:
    """Everything :class:`HFGenerateServer` needs; plain values so tests can build it without verl configs."""

    model_path: str
    prompt_length: int
    response_length: int
    seed: int = 0
    dtype: str = "float32"
    attn_implementation: str = "sdpa"
    banned_tokens: list[str] = field(default_factory=lambda: list(VISION_TOKENS))
    ignore_eos: bool = False
    answer_tokens: int = 0
    answer_share: float = 1.0

    def __post_init__(self) -> None:
        if self.answer_tokens < 0 or not 0.0 <= self.answer_share <= 1.0:
            raise ValueError(
                f"rollout.engine_kwargs.{ROLLOUT_NAME}: answer_tokens must be >= 0 and answer_share in [0, 1]; "
                f"got {self.answer_tokens} and {self.answer_share}"
            )

    @classmethod
    def from_verl(cls, rollout_config: Any, model_config: Any, replica_rank: int = 0) -> HFGenerationSettings:
        """Read the settings from verl's ``RolloutConfig`` and ``HFModelConfig`` (dataclasses or DictConfigs)."""
        options = dict((rollout_config.engine_kwargs or {}).get(ROLLOUT_NAME) or {})
        unknown = set(options) - {"dtype", "attn_implementation", "banned_tokens", "answer_tokens", "answer_share"}
        if unknown:
            raise ValueError(f"unknown rollout.engine_kwargs.{ROLLOUT_NAME} keys: {sorted(unknown)}")
        override = dict(model_config.get("override_config", {}) or {})
        model_path = model_config.get("local_path") or model_config.path
        return cls(
            model_path=str(model_path),
            prompt_length=int(rollout_config.prompt_length),
            response_length=int(rollout_config.response_length),
            seed=int(rollout_config.seed) + replica_rank,
            dtype=str(options.get("dtype", "float32")),
            attn_implementation=str(options.get("attn_implementation", override.get("attn_implementation", "sdpa"))),
            banned_tokens=list(options.get("banned_tokens", VISION_TOKENS)),
            ignore_eos=bool(rollout_config.get("ignore_eos", False)),
            answer_tokens=int(options.get("answer_tokens", 0)),
            answer_share=float(options.get("answer_share", 1.0)),
        )


class HFGenerateServer:
    """Token-in/token-out generation with a transformers model; the Ray actor behind one ``hf`` replica."""

    def __init__(self, settings: HFGenerationSettings) -> None:
        import transformers

        self.settings = settings
        config = transformers.AutoConfig.from_pretrained(settings.model_path, trust_remote_code=False)
        architecture = (config.architectures or [None])[0]
        model_cls = getattr(transformers, architecture or "", None) or transformers.AutoModelForCausalLM
        self.model = model_cls.from_pretrained(
            settings.model_path,
            dtype=getattr(torch, settings.dtype),
            attn_implementation=settings.attn_implementation,
            trust_remote_code=False,
        ).eval()
        self.processor = _load_processor(settings.model_path)
        self.tokenizer = getattr(self.processor, "tokenizer", None) or transformers.AutoTokenizer.from_pretrained(
            settings.model_path
        )
        self.banned_token_ids = _token_ids(self.tokenizer, settings.banned_tokens)
        self.answer_open_ids = self.tokenizer.encode(ANSWER_OPEN, add_special_tokens=False)
        self.answer_close_ids = self.tokenizer.encode(ANSWER_CLOSE, add_special_tokens=False)
        answer_length = len(self.answer_open_ids) + settings.answer_tokens + len(self.answer_close_ids) + 1
        if settings.answer_tokens and answer_length > settings.response_length:
            raise ValueError(
                f"rollout.engine_kwargs.{ROLLOUT_NAME}.answer_tokens={settings.answer_tokens} makes responses of "
                f"{answer_length} tokens, more than the response length {settings.response_length}: lower it"
            )
        self.global_steps: int | None = None
        self._lock = asyncio.Lock()
        torch.manual_seed(settings.seed)

    # ------------------------------------------------------------------ generation
    async def generate(
        self,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        request_id: str,
        image_data: list[Any] | None = None,
        video_data: list[Any] | None = None,
        **kwargs: Any,
    ):
        """Generate one response (requests are served one at a time, off the actor's event loop)."""
        if video_data is not None or any(value is not None for value in kwargs.values()):
            extra = ["video_data"] if video_data is not None else []
            raise NotImplementedError(f"hf rollout does not support {extra + [k for k, v in kwargs.items() if v]}")
        async with self._lock:
            return await asyncio.to_thread(self.generate_sync, list(prompt_ids), dict(sampling_params), image_data)

    @torch.no_grad()
    def generate_sync(
        self, prompt_ids: list[int], sampling_params: dict[str, Any], image_data: list[Any] | None
    ) -> TokenOutput:
        """Blocking generation; returns verl's ``TokenOutput``."""
        unknown = set(sampling_params) - _SAMPLING_KEYS
        if unknown:
            logger.warning("hf rollout ignores sampling params %s", sorted(unknown))
        want_logprobs = bool(sampling_params.get("logprobs", False))
        if sampling_params.get("seed") is not None:  # requests are served one at a time: the global RNG is ours
            torch.manual_seed(int(sampling_params["seed"]))
        if self.settings.answer_tokens and float(torch.rand(())) < self.settings.answer_share:
            return self._answer_format(prompt_ids, sampling_params, image_data, want_logprobs)
        inputs = self._model_inputs(prompt_ids, image_data)
        out = self.model.generate(
            **inputs,
            **self._generation_kwargs(len(prompt_ids), sampling_params),
            return_dict_in_generate=True,
            output_scores=want_logprobs,
        )
        token_ids = out.sequences[0, len(prompt_ids) :].tolist()
        log_probs = None
        if want_logprobs:
            log_probs = [
                torch.log_softmax(step_scores[0].float(), dim=-1)[token].item()
                for step_scores, token in zip(out.scores, token_ids, strict=True)
            ]
        return TokenOutput(
            token_ids=token_ids,
            log_probs=log_probs,
            stop_reason="completed",
            extra_fields={"global_steps": self.global_steps},
        )

    def _answer_format(
        self, prompt_ids: list[int], sampling_params: dict[str, Any], image_data: list[Any] | None, want_logprobs: bool
    ) -> TokenOutput:
        """The answer-format stand-in (module docstring): `<answer>` + N sampled tokens + `</answer>` + end."""
        opened = list(prompt_ids) + self.answer_open_ids
        kwargs = self._generation_kwargs(len(opened), sampling_params)
        kwargs.update(max_new_tokens=self.settings.answer_tokens, min_new_tokens=self.settings.answer_tokens)
        out = self.model.generate(**self._model_inputs(opened, image_data), **kwargs)
        answer = out[0, len(opened) :].tolist()
        token_ids = [*self.answer_open_ids, *answer, *self.answer_close_ids, self.tokenizer.eos_token_id]
        log_probs = None
        if want_logprobs:  # the policy's log-probs of every response token, written or sampled (one forward)
            logits = self.model(**self._model_inputs(list(prompt_ids) + token_ids, image_data)).logits[0].float()
            logits = logits[len(prompt_ids) - 1 : -1] / max(float(sampling_params.get("temperature", 1.0)), 1e-6)
            logits[:, self.banned_token_ids] = float("-inf")  # [response, vocab], as generate's suppression
            chosen = torch.tensor(token_ids)[:, None]  # [response, 1]
            log_probs = torch.log_softmax(logits, dim=-1).gather(-1, chosen)[:, 0].tolist()
        steps = {"global_steps": self.global_steps}
        return TokenOutput(token_ids=token_ids, log_probs=log_probs, stop_reason="completed", extra_fields=steps)

    def _model_inputs(self, prompt_ids: list[int], image_data: list[Any] | None) -> dict[str, torch.Tensor]:
        """input_ids/attention_mask plus the image tensors; checks the prompt's image placeholders match them."""
        input_ids = torch.tensor([prompt_ids], dtype=torch.long)
        inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        if not image_data:
            return inputs
        image_processor = getattr(self.processor, "image_processor", None)
        if image_processor is None:
            raise ValueError(f"{self.settings.model_path} has no image processor but the request has images")
        vision = image_processor(images=image_data, return_tensors="pt")
        inputs["pixel_values"] = vision["pixel_values"].to(self.model.dtype)
        inputs["image_grid_thw"] = vision["image_grid_thw"]
        merge = int(getattr(image_processor, "merge_size", 2)) ** 2
        expected = int(vision["image_grid_thw"].prod(dim=-1).sum()) // merge
        image_token_id = getattr(self.model.config, "image_token_id", None)
        found = int((input_ids == image_token_id).sum())
        if found != expected:
            raise ValueError(f"prompt has {found} image tokens but the images need {expected}")
        # transformers 5 builds Qwen2.5-VL's M-RoPE ids (3-D positions over the image grid) from mm_token_type_ids
        # (1 = image token), as the processor returns it; without it the image tokens get text positions and a trained
        # model's responses fall apart (a random one's only change).
        inputs["mm_token_type_ids"] = (input_ids == image_token_id).long()
        return inputs

    def _generation_kwargs(self, prompt_len: int, sampling_params: dict[str, Any]) -> dict[str, Any]:
        """Map verl/vLLM-style sampling params onto transformers ``generate`` arguments."""
        settings = self.settings
        max_tokens = sampling_params.get("max_tokens", sampling_params.get("max_new_tokens"))
        if max_tokens is None:
            max_tokens = min(settings.response_length, settings.prompt_length + settings.response_length - prompt_len)
        max_tokens = max(1, int(max_tokens))
        temperature = float(sampling_params.get("temperature", 1.0))
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_tokens,
            "do_sample": temperature > 0,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self.tokenizer.eos_token_id,
            "repetition_penalty": float(sampling_params.get("repetition_penalty", 1.0)),
        }
        if self.banned_token_ids:
            kwargs["suppress_tokens"] = self.banned_token_ids
        if settings.ignore_eos:
            kwargs["min_new_tokens"] = max_tokens
        if temperature > 0:
            top_k = int(sampling_params.get("top_k", -1))
            kwargs.update(temperature=temperature, top_p=float(sampling_params.get("top_p", 1.0)))
            kwargs["top_k"] = top_k if top_k > 0 else None
        return kwargs

    # ------------------------------------------------------------------ weights
    def update_weights(self, named_tensors: dict[str, torch.Tensor], global_steps: int | None = None) -> int:
        """Load the trainer's full weights (HF key names); returns how many tensors were loaded."""
        expected = self.model.state_dict()
        unexpected = sorted(set(named_tensors) - set(expected))
        if unexpected:
            raise KeyError(f"weights not in the rollout model: {unexpected[:5]} (+{max(0, len(unexpected) - 5)})")
        missing = sorted(set(expected) - set(named_tensors) - _tied_keys(self.model))
        if missing:
            raise KeyError(f"trainer sent no weights for: {missing[:5]} (+{max(0, len(missing) - 5)})")
        with torch.no_grad():
            for name, tensor in named_tensors.items():
                expected[name].copy_(tensor.to(expected[name].dtype))
        self.global_steps = global_steps
        return len(named_tensors)

    def get_global_steps(self) -> int | None:
        return self.global_steps

    # ------------------------------------------------------------------ lifecycle (nothing to free on CPU)
    async def wake_up(self, tags: list[str] | None = None) -> None:
        return None

    async def sleep(self) -> None:
        return None

    async def abort_all_requests(self, reset_prefix_cache: bool = True, reject_request: bool = False) -> dict:
        return {}

    async def resume_generation(self) -> None:
        return None

    async def clear_kv_cache(self) -> None:
        return None

    async def release_kv_cache(self) -> None:
        return None

    async def resume_kv_cache(self) -> None:
        return None

    async def start_profile(self, **kwargs: Any) -> None:
        return None

    async def stop_profile(self) -> None:
        return None


def _load_processor(model_path: str):
    """The model's processor (tokenizer + image processor) if it has one, else its tokenizer."""
    import transformers

    try:
        return transformers.AutoProcessor.from_pretrained(model_path, trust_remote_code=False)
    except (OSError, ValueError):
        return transformers.AutoTokenizer.from_pretrained(model_path, trust_remote_code=False)


def _token_ids(tokenizer: Any, tokens: Iterable[str]) -> list[int]:
    """Ids of the given special tokens that the tokenizer knows (unknown ones are skipped)."""
    vocab = tokenizer.get_vocab()
    return sorted({vocab[token] for token in tokens if token in vocab})


def _tied_keys(model: torch.nn.Module) -> set[str]:
    """State-dict keys that alias another parameter (e.g. a tied ``lm_head.weight``)."""
    seen: dict[int, str] = {}
    tied = set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in seen:
            tied.add(name)
        seen[id(tensor)] = name
    return tied


def server_name(replica_rank: int) -> str:
    """Ray actor name of a replica's server (the adapter finds its server by it)."""
    return f"{SERVER_NAME_PREFIX}{replica_rank}"


class HFServerAdapter(BaseRollout):
    """Trainer-side half of the ``hf`` rollout: forwards the FSDP engine's weights to this rank's server."""

    def __init__(self, config: Any, model_config: Any, device_mesh: Any, replica_rank: int = -1) -> None:
        super().__init__(config, model_config, device_mesh)
        cfg = self.config
        if cfg.tensor_model_parallel_size * cfg.pipeline_model_parallel_size * cfg.data_parallel_size != 1:
            raise NotImplementedError("hf rollout supports tensor/pipeline/data_parallel_size=1 only")
        self.replica_rank = int(os.environ.get("RANK", "0")) if replica_rank == -1 else replica_rank
        self._server: ray.actor.ActorHandle | None = None

    async def resume(self, tags: list[str]) -> None:
        return None

    async def release(self) -> None:
        return None

    async def update_weights(self, weights: Any, wire_format: str = "named_tensors", **kwargs: Any) -> None:
        """Collect the full tensors (every rank must consume the generator: it gathers DTensors) and send them."""
        if wire_format != "named_tensors" or kwargs.get("peft_config") is not None:
            raise NotImplementedError("hf rollout accepts full named tensors only (no delta sync, no LoRA adapter)")
        named = {name: tensor.detach().to("cpu", copy=True) for name, tensor in weights}
        if self._server is None:
            self._server = ray.get_actor(server_name(self.replica_rank))
        await self._server.update_weights.remote(named, kwargs.get("global_steps"))


class HFReplica(RolloutReplica):
    """One ``hf`` replica = one :class:`HFGenerateServer` actor next to its trainer rank (hybrid mode)."""

    async def launch_servers(self) -> None:
        if self.rollout_mode != RolloutMode.HYBRID or self.world_size != 1:
            raise NotImplementedError("hf rollout supports hybrid mode with one trainer rank per replica")
        settings = HFGenerationSettings.from_verl(self.config, self.model_config, self.replica_rank)
        server = (
            ray.remote(HFGenerateServer)
            .options(name=server_name(self.replica_rank), max_concurrency=self.max_concurrency)
            .remote(settings)
        )
        self.servers = [server]
        self._server_handle = server
        self._server_address = server_name(self.replica_rank)

    def get_ray_class_with_init_args(self):
        raise NotImplementedError("hf rollout runs in hybrid mode only (no colocated/standalone servers)")
