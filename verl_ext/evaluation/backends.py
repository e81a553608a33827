"""Inference backends of the evaluation: plain transformers (CPU or GPU) and vLLM (GPU).

Both expose the same two calls on lists of `ViewInput` (chat messages + one PIL image):
- `generate(views) -> list[str]`: greedy responses, decoded without special tokens (as verl's reward loop does);
- `score_answers(views, prefixes, vocabularies) -> list[np.ndarray]`: for each view, the teacher-forced log-probability
  log π(c + "</answer>" | image, prompt, prefix) of every class name c of its vocabulary, summed over the tokens.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

ANSWER_SUFFIX = "</answer>"
# Vision special tokens of Qwen2.5-VL: never generated (a random-weight model can sample them; a real one should not).
VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")


@dataclass
class ViewInput:
    """One (prompt, image) pair: `messages` is the chat with an {"type": "image"} entry, `image` a PIL RGB image."""

    messages: list[dict[str, Any]]
    image: Any


class EvalBackend(Protocol):
    """What the evaluation needs from an inference engine."""

    def generate(self, views: Sequence[ViewInput]) -> list[str]: ...

    def score_answers(
        self,
        views: Sequence[ViewInput],
        prefixes: Sequence[str],
        vocabularies: Sequence[Sequence[str]],
        suffix: str = ANSWER_SUFFIX,
    ) -> list[np.ndarray]: ...


def generate_in_batches(
    rows: Sequence[Any], backend: EvalBackend, batch_size: int, progress: Callable[[int], None] | None = None
) -> list[str]:
    """Greedy answers of `backend` to `rows` (each with `.messages` and `.image`), `batch_size` at a time, in order;
    `progress(n)` after each batch."""
    responses: list[str] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        responses.extend(backend.generate([ViewInput(r.messages, r.image) for r in chunk]))
        if progress:
            progress(len(chunk))
    return responses


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (greedy decoding is deterministic anyway; this covers any sampling path)."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class HFBackend:
    """transformers `generate` + a teacher-forced forward for the answer scores; batch of `batch_size` sequences.

    Args:
        model_dir: a local Qwen2.5-VL-style model directory (processor + weights).
        max_new_tokens: generation budget (Visual-RFT trains with 256).
        batch_size: sequences per forward / generate call.
        seed: seeds Python/numpy/torch.
        device: "cpu", "cuda", ...; default cuda if available.
        dtype: torch dtype name for the weights ("float32", "bfloat16"); default float32 on CPU, bfloat16 on GPU.
        temperature: 0 (default) decodes greedily; > 0 samples (e.g. drawing rollouts from a checkpoint).
    """

    def __init__(
        self,
        model_dir: str,
        max_new_tokens: int = 256,
        batch_size: int = 8,
        seed: int = 0,
        device: str | None = None,
        dtype: str | None = None,
        temperature: float = 0.0,
    ) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        seed_everything(seed)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = dtype or ("float32" if self.device == "cpu" else "bfloat16")
        self.processor = AutoProcessor.from_pretrained(model_dir)
        self.tokenizer = self.processor.tokenizer
        model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=getattr(torch, dtype))
        self.model = model.to(self.device).eval()
        self.max_new_tokens, self.batch_size, self.seed = max_new_tokens, batch_size, seed
        self.temperature = float(temperature)
        vocab = self.tokenizer.get_vocab()
        self.bad_words_ids = [[vocab[t]] for t in VISION_TOKENS if t in vocab]
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def prompt_text(self, messages: list[dict[str, Any]]) -> str:
        """The chat-template text with the generation prompt (image placeholders not yet expanded)."""
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def generate(self, views: Sequence[ViewInput]) -> list[str]:
        """Greedy (or, with temperature > 0, sampled) responses of `views`, in order (left-padded batches)."""
        import torch

        self.tokenizer.padding_side = "left"
        out: list[str] = []
        for start in range(0, len(views), self.batch_size):
            chunk = views[start : start + self.batch_size]
            enc = self.processor(
                text=[self.prompt_text(v.messages) for v in chunk],
                images=[v.image for v in chunk],
                padding=True,
                return_tensors="pt",
            ).to(self.device)
            with torch.inference_mode():
                ids = self.model.generate(
                    **enc,
                    max_new_tokens=self.max_new_tokens,
                    do_sample=self.temperature > 0,
                    **({"temperature": self.temperature, "top_k": 0} if self.temperature > 0 else {}),
                    bad_words_ids=self.bad_words_ids or None,
                    pad_token_id=self.pad_id,
                )
            new = ids[:, enc["input_ids"].shape[1] :]
            out.extend(self.tokenizer.batch_decode(new, skip_special_tokens=True))
        return out

    def score_answers(
        self,
        views: Sequence[ViewInput],
        prefixes: Sequence[str],
        vocabularies: Sequence[Sequence[str]],
        suffix: str = ANSWER_SUFFIX,
    ) -> list[np.ndarray]:
        """Summed log-probs of each class + `suffix` after prompt + prefix, per view; shapes (len(vocab),).

        `suffix=""` scores arbitrary continuations (e.g. whole training targets for their likelihood)."""
        return [self._score_one(v, p, vocab, suffix) for v, p, vocab in zip(views, prefixes, vocabularies, strict=True)]

    def _score_one(self, view: ViewInput, prefix: str, vocab: Sequence[str], suffix: str = ANSWER_SUFFIX) -> np.ndarray:
        """One view: the prefix (with the expanded image) once, each continuation right-padded, `batch_size` at a time.

        The continuation is tokenized on its own and appended to the prefix's ids, so every class is scored on the
        same prefix tokens.
        """
        import torch

        enc = self.processor(text=[self.prompt_text(view.messages) + prefix], images=[view.image], return_tensors="pt")
        prefix_ids = enc["input_ids"][0]
        conts = [self.tokenizer(c + suffix, add_special_tokens=False)["input_ids"] for c in vocab]
        scores = np.zeros(len(vocab), dtype=np.float64)
        for start in range(0, len(conts), self.batch_size):
            chunk = conts[start : start + self.batch_size]
            width = max(len(c) for c in chunk)
            n, plen = len(chunk), len(prefix_ids)
            input_ids = torch.full((n, plen + width), self.pad_id, dtype=torch.long)
            attention = torch.zeros((n, plen + width), dtype=torch.long)
            for i, cont in enumerate(chunk):
                input_ids[i, :plen] = prefix_ids
                input_ids[i, plen : plen + len(cont)] = torch.tensor(cont, dtype=torch.long)
                attention[i, : plen + len(cont)] = 1
            kwargs = {
                "input_ids": input_ids,
                "attention_mask": attention,
                "pixel_values": torch.cat([enc["pixel_values"]] * n),
                "image_grid_thw": enc["image_grid_thw"].repeat(n, 1),
            }
            if "mm_token_type_ids" in enc:  # transformers 5 computes M-RoPE ids from it
                mm = torch.zeros_like(input_ids)
                mm[:, :plen] = enc["mm_token_type_ids"][0]
                kwargs["mm_token_type_ids"] = mm
            kwargs = {k: v.to(self.device) for k, v in kwargs.items()}
            with torch.inference_mode():
                # Only positions plen-1 .. plen+width-2 predict continuation tokens: keep the last width+1 logits.
                logits = self.model(**kwargs, logits_to_keep=width + 1).logits[:, :width].float()
            logp = torch.log_softmax(logits, dim=-1).cpu()
            for i, cont in enumerate(chunk):
                scores[start + i] = float(logp[i, torch.arange(len(cont)), torch.tensor(cont)].sum())
        return scores


class VLLMBackend:
    """vLLM offline engine with the HF backend's interface (GPU only; imported lazily).

    Args:
        model_dir: a local model directory.
        max_new_tokens: generation budget.
        batch_size: unused by vLLM's scheduler; kept for the same constructor.
        seed: engine seed.
        tensor_parallel_size: GPUs per engine.
        gpu_memory_utilization: vLLM's memory fraction.
        max_model_len: context length (prompt with image tokens + response).
        temperature: 0 (default) decodes greedily; > 0 samples (engine-seeded, so repeated prompts differ).

    Note:
        Scores use `prompt_logprobs` on the text prompt + prefix + class + "</answer>" (prefix caching makes the shared
        part cheap). The number of scored tokens is the length of the separately tokenized continuation; a BPE merge
        across the "<answer>" boundary would shift it by one token (Qwen's pre-tokenizer splits "<answer>" from
        letters, so it does not happen with Qwen2.5-VL).
    """

    def __init__(
        self,
        model_dir: str,
        max_new_tokens: int = 256,
        batch_size: int = 8,
        seed: int = 0,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.8,
        max_model_len: int = 4096,
        temperature: float = 0.0,
    ) -> None:
        try:
            import vllm
        except ImportError as err:
            raise RuntimeError(
                "--backend vllm needs the vLLM package (a GPU install: pip install 'domain-rft[gpu]'); "
                "use --backend hf for plain transformers"
            ) from err
        from transformers import AutoProcessor

        self._vllm = vllm
        self.processor = AutoProcessor.from_pretrained(model_dir)
        self.llm = vllm.LLM(
            model=model_dir,
            seed=seed,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            limit_mm_per_prompt={"image": 1},
            enable_prefix_caching=True,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.max_new_tokens, self.seed, self.temperature = max_new_tokens, seed, float(temperature)

    def prompt_text(self, messages: list[dict[str, Any]]) -> str:
        """The chat-template text with the generation prompt."""
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def generate(self, views: Sequence[ViewInput]) -> list[str]:
        """Greedy (temperature 0) or sampled responses, decoded without special tokens."""
        # A per-request seed would give every copy of a prompt the same sample: sampling uses the engine's seed.
        seed = self.seed if self.temperature == 0 else None
        params = self._vllm.SamplingParams(temperature=self.temperature, max_tokens=self.max_new_tokens, seed=seed)
        prompts = [{"prompt": self.prompt_text(v.messages), "multi_modal_data": {"image": v.image}} for v in views]
        return [o.outputs[0].text for o in self.llm.generate(prompts, params, use_tqdm=False)]

    def score_answers(
        self,
        views: Sequence[ViewInput],
        prefixes: Sequence[str],
        vocabularies: Sequence[Sequence[str]],
        suffix: str = ANSWER_SUFFIX,
    ) -> list[np.ndarray]:
        """Summed prompt log-probs of each class + `suffix`, per view."""
        params = self._vllm.SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=0)
        prompts, lengths = [], []
        for view, prefix, vocab in zip(views, prefixes, vocabularies, strict=True):
            head = self.prompt_text(view.messages) + prefix
            for cls in vocab:
                prompts.append({"prompt": head + cls + suffix, "multi_modal_data": {"image": view.image}})
                lengths.append(len(self.tokenizer(cls + suffix, add_special_tokens=False)["input_ids"]))
        flat = []
        for out, n in zip(self.llm.generate(prompts, params, use_tqdm=False), lengths):
            ids, lps = out.prompt_token_ids[-n:], out.prompt_logprobs[-n:]
            flat.append(sum(lp[tok].logprob for tok, lp in zip(ids, lps)))
        result, pos = [], 0
        for vocab in vocabularies:
            result.append(np.asarray(flat[pos : pos + len(vocab)], dtype=np.float64))
            pos += len(vocab)
        return result


def make_backend(name: str, model_dir: str, **kwargs: Any) -> EvalBackend:
    """Build the backend called `name` ("hf" or "vllm") with its keyword arguments."""
    if name == "hf":
        return HFBackend(model_dir, **kwargs)
    if name == "vllm":
        return VLLMBackend(model_dir, **kwargs)
    raise ValueError(f"unknown backend {name!r}; choose 'hf' or 'vllm'")
