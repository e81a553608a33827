"""A tiny, randomly initialised Qwen2.5-VL with offline tokenizer and processor files (no download).

Used by the tests, the demo and the CPU benchmarks only. The architecture is the real
`Qwen2_5_VLForConditionalGeneration` from transformers, shrunk (hidden 64, 2 layers, vision depth 2); the tokenizer is
a byte-level BPE with the 256 byte tokens and no merges, plus Qwen2.5-VL's special tokens and a chat template with the
same layout as Qwen2.5-VL's (`<|im_start|>role\\n ... <|im_end|>`, images as
`<|vision_start|><|image_pad|><|vision_end|>`). Weights are written as safetensors, so `from_pretrained(path)`
(verl's own loading path) works with `HF_HUB_OFFLINE=1`.

    python -m verl_ext.cpu.tiny_qwen25vl --out /tmp/tiny-qwen25vl
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# The vision tokens a random-weight policy must never sample (they break the position-id recomputation).
VISION_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]

# Same rendered layout as Qwen2.5-VL-Instruct's template (system prompt, image placeholders, generation prompt).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Image sizes: every side a multiple of 28, between 2x2 and 8x8 merged patches (4..64 image tokens).
MIN_PIXELS = 28 * 28 * 4
MAX_PIXELS = 28 * 28 * 64


def _byte_level_vocab() -> dict[str, int]:
    """GPT-2's byte-to-unicode table: the 256 byte tokens of a byte-level BPE, ids 0..255."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return {chars[b]: b for b in range(256)}


def build_tokenizer():
    """Byte-level BPE `Qwen2TokenizerFast` with Qwen2.5-VL's special tokens at ids 256.."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import Qwen2TokenizerFast

    backend = Tokenizer(models.BPE(vocab=_byte_level_vocab(), merges=[], unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    tokenizer = Qwen2TokenizerFast(
        tokenizer_object=backend,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
    )
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_processor(tokenizer=None):
    """`Qwen2_5_VLProcessor` around the tiny tokenizer and a small-image `Qwen2VLImageProcessor`."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    tokenizer = tokenizer or build_tokenizer()
    image_processor = Qwen2VLImageProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    video_processor = Qwen2VLVideoProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    return Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )


def build_config(tokenizer, hidden_size: int = 64, num_layers: int = 2, vision_depth: int = 2):
    """A `Qwen2_5_VLConfig` of about 200k parameters whose token ids match the tiny tokenizer."""
    from transformers import Qwen2_5_VLConfig

    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
    vocab_size = ((len(tokenizer) + 63) // 64) * 64
    text_config = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 2, 4]},
        tie_word_embeddings=True,
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    vision_config = dict(
        depth=vision_depth,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        out_hidden_size=hidden_size,
        fullatt_block_indexes=[vision_depth - 1],
        window_size=56,
    )
    return Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
        architectures=["Qwen2_5_VLForConditionalGeneration"],
    )


def build_tiny_model_dir(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Write a loadable tiny Qwen2.5-VL (config, safetensors weights, tokenizer, processor) to `out_dir`.

    The directory is written to a temporary sibling first and renamed into place, so a half-written model is never
    seen. An existing complete directory is kept as it is (building is deterministic for a seed).
    """
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    out = Path(out_dir)
    if (out / "model.safetensors").exists() and (out / "tokenizer.json").exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    tokenizer = build_tokenizer()
    processor = build_processor(tokenizer)
    config = build_config(tokenizer)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).to(torch.float32)
    model.generation_config = GenerationConfig(
        eos_token_id=config.text_config.eos_token_id, pad_token_id=config.text_config.pad_token_id
    )
    model.save_pretrained(tmp, safe_serialization=True)
    processor.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "tiny_model.json").write_text(json.dumps({"seed": seed, "vision_tokens": VISION_TOKENS}, indent=1))
    try:
        tmp.rename(out)
    except OSError:  # another process finished first; keep theirs
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="directory to write the model to")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(build_tiny_model_dir(args.out, seed=args.seed))


if __name__ == "__main__":
    main()
