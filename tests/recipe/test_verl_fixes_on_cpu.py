"""verl 0.9.1 crashes on a Qwen2.5-VL micro-batch without images (its synthetic padding rows are text-only) under
transformers 5; `recipe.domain_grpo.verl_fixes` repairs it. In a subprocess: verl's monkey patch is process-wide."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent(
    """
    import os, sys, torch
    from transformers import AutoModelForImageTextToText
    from verl.models.transformers.monkey_patch import apply_monkey_patch
    from verl_ext.cpu.tiny_qwen25vl import build_tiny_model_dir
    if sys.argv[1] == "fixed":
        from recipe.domain_grpo import verl_fixes
        verl_fixes.install()
    path = build_tiny_model_dir(os.environ["MODEL_DIR"])
    model = AutoModelForImageTextToText.from_pretrained(path, attn_implementation="sdpa", dtype=torch.float32).eval()
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        plain = model(input_ids=ids).logits
    apply_monkey_patch(model, use_remove_padding=False)  # verl's Qwen2.5-VL forward (text+image micro-batches)
    with torch.no_grad():
        try:
            positions = torch.arange(5).view(1, 1, 5).expand(4, 1, 5)  # verl's (4, bsz, L): text row + 3 M-RoPE rows
            patched = model(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=positions).logits
        except AttributeError as err:
            print("AttributeError", err)
            raise SystemExit(3)
    print((patched - plain).abs().max().item())
    """
)


@pytest.mark.parametrize("variant", ["stock", "fixed"])
def test_text_only_micro_batch(tmp_path, variant):
    env = {"MODEL_DIR": str(tmp_path / "model"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", PROBE, variant], capture_output=True, text=True, env=env, timeout=300)
    if variant == "stock":  # the bug, so the repair can be dropped the day verl fixes it
        assert proc.returncode == 3 and "has no attribute 'mean'" in proc.stdout, proc.stderr[-2000:]
    else:
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert float(proc.stdout.strip().splitlines()[-1]) < 1e-5  # the dummy image adds 0 · mean: same logits
