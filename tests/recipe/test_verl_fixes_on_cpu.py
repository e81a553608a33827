"""verl 0.9.1 crashes on a Qwen2.5-VL micro-batch without images (its synthetic padding rows are text-only) under
transformers 5; `recipe.common.verl_fixes` repairs it. In a subprocess: verl's monkey patch is process-wide."""

from __future__ import annotations

import subprocess
import sys
import textwrap

PROBE = textwrap.dedent(
    """
    import os, sys, torch
    from transformers import AutoModelForImageTextToText
    from verl.models.transformers.monkey_patch import apply_monkey_patch
    from verl_ext.cpu.tiny_qwen25vl import build_tiny_model_dir
    path = build_tiny_model_dir(os.environ["MODEL_DIR"])
    model = AutoModelForImageTextToText.from_pretrained(path, attn_implementation="sdpa", dtype=torch.float32).eval()
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        plain = model(input_ids=ids).logits
    apply_monkey_patch(model, use_remove_padding=False)  # verl's Qwen2.5-VL forward (text+image micro-batches)
    positions = torch.arange(5).view(1, 1, 5).expand(4, 1, 5)  # verl's (4, bsz, L): text row + 3 M-RoPE rows
    inputs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=positions)
    with torch.no_grad():
        try:
            model(**inputs)
            print("stock: no error")
        except AttributeError as err:
            print("stock:", err)
        from recipe.common import verl_fixes
        verl_fixes.install()
        patched = model(**inputs).logits
    print((patched - plain).abs().max().item())
    """
)


def test_text_only_micro_batch(tmp_path):
    env = {"MODEL_DIR": str(tmp_path / "model"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    # stock verl 0.9.1 fails (so the repair can be dropped the day verl fixes it) ...
    assert any(line.startswith("stock:") and "has no attribute 'mean'" in line for line in lines), lines
    # ... and the repaired forward gives the text-only logits (the dummy image adds 0 · mean)
    assert float(lines[-1]) < 1e-5
