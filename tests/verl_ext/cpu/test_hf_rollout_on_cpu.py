"""The ``hf`` rollout server (transformers ``generate``) in-process, with the tiny Qwen2.5-VL: no Ray, a few seconds."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from verl_ext.cpu.hf_rollout import HFGenerateServer, HFGenerationSettings
from verl_ext.cpu.tiny_qwen25vl import VISION_TOKENS, build_tiny_model_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model_dir(tmp_path_factory.mktemp("hf_rollout") / "model")


@pytest.fixture(scope="module")
def server(model_dir: Path) -> HFGenerateServer:
    return HFGenerateServer(HFGenerationSettings(model_path=str(model_dir), prompt_length=256, response_length=16))


def _image(size: int = 56) -> Image.Image:
    return Image.new("RGB", (size, size), (200, 40, 40))


def _prompt_ids(server: HFGenerateServer, image: Image.Image) -> list[int]:
    """Chat-template prompt with the image placeholder expanded by the processor (as verl's agent loop sends it)."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which class?"}]}]
    text = server.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return server.processor(text=[text], images=[image], return_tensors="pt")["input_ids"][0].tolist()


@pytest.mark.parametrize("seed", [0, 1])
def test_sampled_response_has_logprobs_and_no_vision_tokens(server: HFGenerateServer, seed: int) -> None:
    torch.manual_seed(seed)
    image = _image()
    params = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "logprobs": True, "max_tokens": 12}
    out = server.generate_sync(_prompt_ids(server, image), params, [image])
    assert 1 <= len(out.token_ids) <= 12
    assert out.log_probs is not None and len(out.log_probs) == len(out.token_ids)
    assert all(lp <= 0.0 for lp in out.log_probs)
    vision_ids = {server.tokenizer.convert_tokens_to_ids(token) for token in VISION_TOKENS}
    assert not vision_ids & set(out.token_ids)
    assert out.stop_reason == "completed"


def test_banned_tokens_are_never_sampled(model_dir: Path) -> None:
    settings = HFGenerationSettings(model_path=str(model_dir), prompt_length=256, response_length=32)
    vocab = HFGenerateServer(settings).tokenizer.get_vocab()
    # ban every tokenizer token but three: unsuppressed, a random policy would almost surely sample one of them
    banned = [token for token in vocab if token not in {"a", "b", "<|im_end|>"}]
    settings.banned_tokens = banned
    server = HFGenerateServer(settings)
    image = _image()
    out = server.generate_sync(_prompt_ids(server, image), {"temperature": 1.0, "max_tokens": 32}, [image])
    assert len(out.token_ids) >= 1
    assert not {vocab[token] for token in banned} & set(out.token_ids)


def test_greedy_is_deterministic_and_respects_response_length(server: HFGenerateServer) -> None:
    image = _image()
    prompt = _prompt_ids(server, image)
    first = server.generate_sync(prompt, {"temperature": 0}, [image])
    second = server.generate_sync(prompt, {"temperature": 0}, [image])
    assert first.token_ids == second.token_ids
    assert len(first.token_ids) <= server.settings.response_length
    assert first.log_probs is None


def test_image_positions_are_the_processors(server: HFGenerateServer) -> None:
    # transformers 5 computes Qwen2.5-VL's M-RoPE ids from mm_token_type_ids: the server must send the processor's,
    # so that its greedy response is the one of the processor's own inputs (the evaluation CLI's path).
    image = _image(112)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which class?"}]}]
    text = server.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    enc = server.processor(text=[text], images=[image], return_tensors="pt")
    prompt = enc["input_ids"][0].tolist()
    assert torch.equal(server._model_inputs(prompt, [image])["mm_token_type_ids"], enc["mm_token_type_ids"])
    out = server.generate_sync(prompt, {"temperature": 0}, [image])
    with torch.no_grad():
        ref = server.model.generate(
            **enc,
            max_new_tokens=server.settings.response_length,
            do_sample=False,
            suppress_tokens=server.banned_token_ids,
            pad_token_id=server.tokenizer.pad_token_id,
        )
    assert out.token_ids == ref[0, len(prompt) :].tolist()


def test_image_token_count_must_match_the_image(server: HFGenerateServer) -> None:
    image = _image()
    prompt = _prompt_ids(server, image)
    image_pad = server.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    prompt.remove(image_pad)
    with pytest.raises(ValueError, match="image tokens"):
        server.generate_sync(prompt, {"temperature": 0}, [image])


def test_async_generate_returns_token_output_and_rejects_video(server: HFGenerateServer) -> None:
    image = _image()
    prompt = _prompt_ids(server, image)
    out = asyncio.run(server.generate(prompt, {"temperature": 0, "max_tokens": 4}, "req-1", image_data=[image]))
    assert 1 <= len(out.token_ids) <= 4
    assert out.extra_fields["global_steps"] == server.global_steps
    with pytest.raises(NotImplementedError, match="video_data"):
        asyncio.run(server.generate(prompt, {}, "req-2", image_data=[image], video_data=[image]))


def test_update_weights_loads_trainer_weights_and_checks_names(model_dir: Path) -> None:
    server = HFGenerateServer(HFGenerationSettings(model_path=str(model_dir), prompt_length=256, response_length=8))
    state = {name: tensor.clone() + 0.5 for name, tensor in server.model.state_dict().items()}
    assert server.update_weights(state, global_steps=3) == len(state)
    assert server.global_steps == 3
    name = next(iter(state))
    assert torch.equal(server.model.state_dict()[name], state[name])

    with pytest.raises(KeyError, match="not in the rollout model"):
        server.update_weights({**state, "no.such.weight": torch.zeros(1)})
    missing = dict(state)
    missing.pop(name)
    with pytest.raises(KeyError, match="no weights for"):
        server.update_weights(missing)


def test_settings_from_verl_configs(model_dir: Path) -> None:
    rollout = OmegaConf.create(
        {"prompt_length": 64, "response_length": 8, "seed": 5, "ignore_eos": False, "engine_kwargs": {"hf": {}}}
    )
    model = OmegaConf.create({"path": str(model_dir), "override_config": {"attn_implementation": "eager"}})
    settings = HFGenerationSettings.from_verl(rollout, model, replica_rank=2)
    assert (settings.seed, settings.attn_implementation, settings.banned_tokens) == (7, "eager", VISION_TOKENS)
    rollout.engine_kwargs.hf = {"banned_tokens": [], "dtype": "float32"}
    assert HFGenerationSettings.from_verl(rollout, model).banned_tokens == []
    rollout.engine_kwargs.hf = {"unknown": 1}
    with pytest.raises(ValueError, match="unknown"):
        HFGenerationSettings.from_verl(rollout, model)


def _answer_server(model_dir: Path, share: float = 1.0, response_length: int = 24) -> HFGenerateServer:
    settings = HFGenerationSettings(
        model_path=str(model_dir),
        prompt_length=256,
        response_length=response_length,
        answer_tokens=4,
        answer_share=share,
    )
    return HFGenerateServer(settings)


def test_answer_format_wraps_four_sampled_tokens_in_the_tags(model_dir: Path) -> None:
    from verl_ext.domain_loss import answer_span

    server = _answer_server(model_dir)
    image = _image()
    prompt = _prompt_ids(server, image)
    out = server.generate_sync(prompt, {"temperature": 1.0, "seed": 3, "logprobs": True}, [image])
    pieces = [server.tokenizer.decode([t]) for t in out.token_ids]
    # <answer> is 8 byte tokens, </answer> 9, then <|im_end|>: 8 + 4 + 9 + 1 = 22 tokens
    assert len(out.token_ids) == 22 and len(out.log_probs) == 22 and all(lp <= 0.0 for lp in out.log_probs)
    assert "".join(pieces[:8]) == "<answer>" and "".join(pieces[12:]) == "</answer><|im_end|>"
    assert answer_span(pieces) == [False] * 8 + [True] * 4 + [False] * 10
    # the 4 answer tokens are the policy's own sample after `<answer>` (same seed, plain generate)
    opened = prompt + server.answer_open_ids
    torch.manual_seed(3)
    torch.rand(())  # the share draw
    with torch.no_grad():
        ref = server.model.generate(
            **server._model_inputs(opened, [image]),
            **{
                **server._generation_kwargs(len(opened), {"temperature": 1.0}),
                "max_new_tokens": 4,
                "min_new_tokens": 4,
            },
        )
    assert out.token_ids[8:12] == ref[0, len(opened) :].tolist()
    # the log-probs are the policy's (vision tokens suppressed), here against generate's own first-step logits
    raw = server.model.generate(
        **server._model_inputs(opened, [image]),
        **{**server._generation_kwargs(len(opened), {"temperature": 1.0}), "max_new_tokens": 1},
        return_dict_in_generate=True,
        output_logits=True,
    ).logits[0][0]
    raw[server.banned_token_ids] = float("-inf")
    assert out.log_probs[8] == pytest.approx(torch.log_softmax(raw.float(), -1)[out.token_ids[8]].item(), abs=1e-5)
    assert server.generate_sync(prompt, {"temperature": 1.0, "seed": 3}, [image]).token_ids == out.token_ids


def test_answer_share_wraps_a_seeded_share_of_requests(model_dir: Path) -> None:
    server = _answer_server(model_dir, share=0.5)
    image = _image()
    prompt = _prompt_ids(server, image)
    tags = server.answer_open_ids
    wrapped = [server.generate_sync(prompt, {"seed": s}, [image]).token_ids[:8] == tags for s in range(16)]
    assert 0 < sum(wrapped) < 16  # P(all 16 alike) = 2 · 2^-16
    assert wrapped == [server.generate_sync(prompt, {"seed": s}, [image]).token_ids[:8] == tags for s in range(16)]


def test_answer_format_settings_are_checked(model_dir: Path) -> None:
    with pytest.raises(ValueError, match="answer_tokens=4 makes responses of 22 tokens"):
        _answer_server(model_dir, response_length=21)
    with pytest.raises(ValueError, match="answer_share in"):
        HFGenerationSettings(model_path=str(model_dir), prompt_length=8, response_length=8, answer_share=1.5)
    rollout = OmegaConf.create(
        {"prompt_length": 64, "response_length": 24, "seed": 0, "engine_kwargs": {"hf": {"answer_tokens": 4}}}
    )
    settings = HFGenerationSettings.from_verl(rollout, OmegaConf.create({"path": str(model_dir)}))
    assert (settings.answer_tokens, settings.answer_share) == (4, 1.0)
