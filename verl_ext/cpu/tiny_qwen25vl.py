"""A tiny, randomly initialised Qwen2.5-VL with offline tokenizer and processor files (no download).

Used by the tests, the demo and the CPU benchmarks only. The architecture is the real
`Qwen2_5_VLForConditionalGeneration` from transformers, shrunk (hidden 64, 2 layers, vision depth 2); the tokenizer is
a byte-level BPE with the 256 byte tokens and no merges, plus Qwen2.5-VL's special tokens and a chat template with the
same layout as Qwen2.5-VL's (`<|im_start|>role\\n ... <|im_end|>`, images as
`<|vision_start|><|image_pad|><|vision_end|>`). Weights are written as safetensors, so `from_pretrained(path)`
(verl's own loading path) works with `HF_HUB_OFFLINE=1`.

    python -m verl_ext.cpu.tiny_qwen25vl --out /tmp/tiny-qwen25vl
    python -m verl_ext.cpu.tiny_qwen25vl --out /tmp/tiny-wide --size wide        # a named size
    python -m verl_ext.cpu.tiny_qwen25vl --out /tmp/tiny-x --vision-hidden 64 --vision-depth 4 --hidden 96

Sizes (`TinySize`): the default (hidden 64, 2 layers, vision hidden 32, vision depth 2, about 200k parameters) is what
every test and the demo build, unchanged bit for bit; `--size` names a larger one and the per-field options override
it. Heads keep a head size of 16 (text: hidden / 16 query and half as many key/value heads, which M-RoPE's
sections [2, 2, 4] need; vision: vision hidden / 16), so every width must be a multiple of 32 (text) or 16 (vision).
A non-default size is recorded in `tiny_model.json`, and an existing folder of another size is refused, never reused.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from dataclasses import asdict, dataclass, fields, replace
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


@dataclass(frozen=True)
class TinySize:
    """Widths and depths of the tiny model; the defaults are the tests' model."""

    hidden: int = 64  # text hidden size (intermediate 2x); also the vision merger's output
    layers: int = 2  # text decoder layers
    vision_hidden: int = 32  # vision tower width (intermediate 2x)
    vision_depth: int = 2  # vision blocks (the last one full attention)

    def check(self) -> None:
        """Raise ValueError naming the field when a size cannot build (see the module docstring)."""
        for f in fields(self):
            if getattr(self, f.name) < 1:
                raise ValueError(f"{f.name} must be a positive integer, got {getattr(self, f.name)}")
        if self.hidden % 32:
            raise ValueError(f"hidden must be a multiple of 32 (head size 16, key/value heads half), got {self.hidden}")
        if self.vision_hidden % 16:
            raise ValueError(f"vision_hidden must be a multiple of 16 (head size 16), got {self.vision_hidden}")


SIZES = {
    "default": TinySize(),
    # a wider and deeper vision tower and text model that still trains in minutes on 2 CPU cores
    "wide": TinySize(hidden=128, layers=2, vision_hidden=64, vision_depth=4),
}

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


def build_config(tokenizer, size: TinySize | None = None):
    """A `Qwen2_5_VLConfig` whose token ids match the tiny tokenizer (the default size: about 200k parameters)."""
    from transformers import Qwen2_5_VLConfig

    size = size or TinySize()
    size.check()
    hidden_size, num_layers, vision_depth = size.hidden, size.layers, size.vision_depth

    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
    vocab_size = ((len(tokenizer) + 63) // 64) * 64
    text_config = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=hidden_size // 16,
        num_key_value_heads=hidden_size // 32,
        max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 2, 4]},
        tie_word_embeddings=True,
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    vision_config = dict(
        depth=vision_depth,
        hidden_size=size.vision_hidden,
        intermediate_size=2 * size.vision_hidden,
        num_heads=size.vision_hidden // 16,
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


def _recorded_size(out: Path) -> TinySize:
    """The size an existing model folder was built with (no `size` key: the default)."""
    info = json.loads((out / "tiny_model.json").read_text()) if (out / "tiny_model.json").exists() else {}
    return TinySize(**info.get("size", {}))


def build_tiny_model_dir(out_dir: str | os.PathLike, seed: int = 0, size: TinySize | None = None) -> Path:
    """Write a loadable tiny Qwen2.5-VL (config, safetensors weights, tokenizer, processor) to `out_dir`.

    The directory is written to a temporary sibling first and renamed into place, so a half-written model is never
    seen. An existing complete directory of the same size is kept as it is (building is deterministic for a seed).

    Raises:
        ValueError: `size` cannot build (`TinySize.check`), or `out_dir` holds a model of another size.
    """
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    out = Path(out_dir)
    size = size or TinySize()
    size.check()
    if (out / "model.safetensors").exists() and (out / "tokenizer.json").exists():
        if _recorded_size(out) != size:
            raise ValueError(f"{out} holds a tiny model of size {_recorded_size(out)}, not {size}: use another --out")
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    tokenizer = build_tokenizer()
    processor = build_processor(tokenizer)
    config = build_config(tokenizer, size)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).to(torch.float32)
    model.generation_config = GenerationConfig(
        eos_token_id=config.text_config.eos_token_id, pad_token_id=config.text_config.pad_token_id
    )
    model.save_pretrained(tmp, safe_serialization=True)
    processor.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    info = {"seed": seed, "vision_tokens": VISION_TOKENS}
    if size != TinySize():  # the default's file stays as it always was
        info["size"] = asdict(size)
    (tmp / "tiny_model.json").write_text(json.dumps(info, indent=1))
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
    parser.add_argument("--size", choices=sorted(SIZES), default="default", help="a named size (default)")
    for f in fields(TinySize):
        flag = "--" + f.name.replace("_", "-")
        parser.add_argument(flag, type=int, default=None, help=f"override the named size's {f.name}")
    args = parser.parse_args()
    overrides = {f.name: getattr(args, f.name) for f in fields(TinySize) if getattr(args, f.name) is not None}
    size = replace(SIZES[args.size], **overrides)
    try:
        print(build_tiny_model_dir(args.out, seed=args.seed, size=size))
    except ValueError as err:
        parser.exit(2, f"error: {err}\n")


if __name__ == "__main__":
    main()
