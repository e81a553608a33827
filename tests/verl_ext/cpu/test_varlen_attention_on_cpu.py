"""The CPU stand-in for flash-attn's kernels: the packed (remove-padding) layout computes what the padded one does."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from verl_ext.cpu.varlen_attention import flash_attention_forward, varlen_attention


def _reference(q, k, v, bounds, causal=True):
    """Loop over sequences, heads and query positions, in float64: softmax(q·k / sqrt(d)) v over allowed keys."""
    out = torch.zeros_like(q, dtype=torch.float64)
    groups = q.shape[1] // k.shape[1]
    for s, e in zip(bounds, bounds[1:]):
        for h in range(q.shape[1]):
            for i in range(s, e):
                keys = range(s, i + 1) if causal else range(s, e)
                scores = torch.stack([q[i, h].double() @ k[j, h // groups].double() for j in keys]) / q.shape[-1] ** 0.5
                weights = scores.softmax(0)
                out[i, h] = sum(w * v[j, h // groups].double() for w, j in zip(weights, keys))
    return out


@pytest.mark.parametrize("causal", [True, False])
def test_varlen_attention_matches_a_float64_loop_with_grouped_heads(causal):
    gen = torch.Generator().manual_seed(0)
    bounds = [0, 3, 4, 9]  # three packed sequences of 3, 1 and 5 tokens
    q = torch.randn(9, 4, 8, generator=gen)  # 4 query heads
    k, v = torch.randn(9, 2, 8, generator=gen), torch.randn(9, 2, 8, generator=gen)  # 2 key/value heads
    cu = torch.tensor(bounds, dtype=torch.int32)
    out = varlen_attention(q, k, v, cu, cu, 5, 5, causal=causal)
    torch.testing.assert_close(out.double(), _reference(q, k, v, bounds, causal), atol=1e-5, rtol=1e-5)
    # attention never crosses a sequence boundary: changing sequence 0 leaves sequences 1 and 2 unchanged
    q2 = q.clone()
    q2[:3] += 1.0
    assert torch.equal(varlen_attention(q2, k, v, cu, cu, causal=causal)[3:], out[3:])


def test_flash_attention_forward_handles_a_padding_mask():
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 5, 2, 4, generator=gen) for _ in range(3))  # [bsz, seq, heads, dim]
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    out = flash_attention_forward(q, k, v, mask, query_length=5, is_causal=True)
    expected = _reference(q[1, :3], k[1, :3], v[1, :3], [0, 3])  # the 3 valid tokens only
    torch.testing.assert_close(out[1, :3].double(), expected, atol=1e-5, rtol=1e-5)
    assert (out[1, 3:] == 0).all()


PACKED_FORWARD = textwrap.dedent(
    """
    import os
    os.environ["VERL_PLATFORM"] = "cpu"
    import numpy as np, torch
    from PIL import Image
    import verl_ext.cpu  # noqa: F401  (binds the CPU kernels when verl imports its qwen2_vl module)
    from transformers import AutoModelForImageTextToText
    from verl.models.transformers.monkey_patch import apply_monkey_patch
    from verl.utils import hf_processor
    from verl_ext.cpu.tiny_qwen25vl import build_tiny_model_dir

    path = build_tiny_model_dir(os.environ["MODEL_DIR"])
    processor = hf_processor(str(path))

    def encode(width, height, response):
        image = Image.fromarray(np.random.default_rng(width).integers(0, 256, (height, width, 3), dtype=np.uint8))
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which scene?"}]}]
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        out = processor(text=[prompt + response], images=[image], return_tensors="pt")
        vision, _ = processor.get_rope_index(
            input_ids=out["input_ids"], mm_token_type_ids=out["mm_token_type_ids"],
            image_grid_thw=out["image_grid_thw"], attention_mask=out["attention_mask"])
        length = out["input_ids"].shape[1]
        out["position_ids"] = torch.cat([torch.arange(length).view(1, 1, length), vision], 0)  # (4, 1, L)
        return out

    samples = [encode(112, 56, "<answer>forest</answer>"), encode(56, 84, "<answer>river delta</answer>")]
    model = AutoModelForImageTextToText.from_pretrained(path, attn_implementation="sdpa", dtype=torch.float32).eval()
    keys = ("input_ids", "attention_mask", "position_ids", "pixel_values", "image_grid_thw")
    with torch.no_grad():
        padded = [model(**{k: s[k] for k in keys}).logits[0] for s in samples]
    apply_monkey_patch(model, use_remove_padding=True)  # verl's packed path: its flash-attention forward
    packed_inputs = {
        "input_ids": torch.cat([s["input_ids"] for s in samples], 1),
        "attention_mask": None,
        "position_ids": torch.cat([s["position_ids"] for s in samples], -1),
        "pixel_values": torch.cat([s["pixel_values"] for s in samples]),
        "image_grid_thw": torch.cat([s["image_grid_thw"] for s in samples]),
    }
    with torch.no_grad():
        packed = model(**packed_inputs).logits[0]
    first = samples[0]["input_ids"].shape[1]
    print(max((packed[:first] - padded[0]).abs().max().item(), (packed[first:] - padded[1]).abs().max().item()))
    """
)


def test_verls_packed_qwen25vl_forward_equals_the_padded_one_on_cpu(tmp_path):
    # In a subprocess: verl's monkey patch replaces the attention class's forward for the whole process.
    env = {"MODEL_DIR": str(tmp_path / "model"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", PACKED_FORWARD], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert float(proc.stdout.strip().splitlines()[-1]) < 1e-5
