"""The tiny Qwen2.5-VL's size option: the default build unchanged bit for bit, a named larger size that loads and runs,
and sizes that cannot build refused with the field named."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from verl_ext.cpu.tiny_qwen25vl import SIZES, TinySize, build_config, build_tiny_model_dir, build_tokenizer

REPO = Path(__file__).resolve().parents[3]
# sha256 of the default build's model.safetensors (seed 0), taken before the size option existed: every test that
# builds the default model must keep getting exactly these weights (torch pinned by requirements/cpu-lock.txt).
DEFAULT_WEIGHTS_SHA256 = "10f7ea305c5e6dc8f38813db80bc33ad97cb77ee61bd93e9d666bfb4e8914ea8"


def test_default_config_is_the_old_one():
    config = build_config(build_tokenizer())
    text, vision = config.text_config, config.vision_config
    # the values the builder hard-coded before: hidden 64, 2 layers, 4 heads / 2 kv heads, vision 32 wide, 2 heads
    assert (text.hidden_size, text.intermediate_size, text.num_hidden_layers) == (64, 128, 2)
    assert (text.num_attention_heads, text.num_key_value_heads) == (4, 2)
    assert (vision.hidden_size, vision.intermediate_size, vision.num_heads, vision.depth) == (32, 64, 2, 2)
    assert vision.out_hidden_size == 64 and vision.fullatt_block_indexes == [1]


def test_default_build_is_bit_for_bit_unchanged(tmp_path):
    out = build_tiny_model_dir(tmp_path / "m")
    assert hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest() == DEFAULT_WEIGHTS_SHA256
    assert "size" not in json.loads((out / "tiny_model.json").read_text())  # the default's file as before


def test_wide_size_builds_loads_and_runs(tmp_path):
    import torch
    from PIL import Image
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    out = build_tiny_model_dir(tmp_path / "wide", size=SIZES["wide"])
    assert json.loads((out / "tiny_model.json").read_text())["size"] == {
        "hidden": 128,
        "layers": 2,
        "vision_hidden": 64,
        "vision_depth": 4,
    }
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(out)
    text, vision = model.config.text_config, model.config.vision_config
    # head size 16 everywhere: 128 / 16 = 8 heads, 4 kv heads; vision 64 / 16 = 4 heads; last block full attention
    assert (text.num_attention_heads, text.num_key_value_heads, vision.num_heads) == (8, 4, 4)
    assert vision.depth == 4 and vision.fullatt_block_indexes == [3] and vision.out_hidden_size == 128
    processor = AutoProcessor.from_pretrained(out)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "digit?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=[prompt], images=[Image.new("RGB", (56, 56), (255, 255, 255))], return_tensors="pt")
    assert int(inputs["image_grid_thw"].prod()) == 16  # 56 x 56 = 4 x 4 patches of 14 px -> 4 tokens after 2x2 merge
    with torch.no_grad():
        logits = model(**inputs).logits  # [1, T, vocab]
    assert logits.shape[-1] == text.vocab_size and torch.isfinite(logits).all()


@pytest.mark.parametrize(
    "size, field",
    [
        (TinySize(hidden=48), "hidden"),  # 48 / 16 = 3 heads, kv 1.5: refused
        (TinySize(vision_hidden=40), "vision_hidden"),
        (TinySize(layers=0), "layers"),
        (TinySize(vision_depth=0), "vision_depth"),
    ],
)
def test_sizes_that_cannot_build_are_refused(tmp_path, size, field):
    with pytest.raises(ValueError, match=field):
        build_tiny_model_dir(tmp_path / "bad", size=size)
    assert not (tmp_path / "bad").exists()


def test_cli_refuses_a_folder_of_another_size_in_one_line(tmp_path):
    out = tmp_path / "m"
    build_tiny_model_dir(out)
    cmd = [sys.executable, "-m", "verl_ext.cpu.tiny_qwen25vl", "--out", str(out), "--size", "wide"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "use another --out" in proc.stderr, proc.stderr
    cmd = [sys.executable, "-m", "verl_ext.cpu.tiny_qwen25vl", "--out", str(tmp_path / "x"), "--hidden", "50"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "hidden must be a multiple of 32" in proc.stderr, proc.stderr
