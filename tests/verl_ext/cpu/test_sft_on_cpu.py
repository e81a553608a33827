"""verl's own SFT trainer (torchrun, fsdp2 over gloo) runs on CPU with the stand-ins: every part of the model trains."""

from __future__ import annotations

import subprocess

import pytest
import torch
from safetensors.torch import load_file

from recipe.common.runs import final_hf
from recipe.common.sft import cpu_sft_command as sft_command
from verl_ext.cpu.tiny_qwen25vl import build_tiny_model_dir

pytestmark = pytest.mark.slow


@pytest.fixture
def s2_sft_rows(tmp_path):
    """Real Sentinel-2 tiles (`data_prep demo-rs`) converted to verl's SFT layout (`data_prep.sft`)."""
    import sys

    data = tmp_path / "data"
    subprocess.run([sys.executable, "-m", "data_prep", "demo-rs", "--out", str(data), "--no-progress"], check=True)
    out = tmp_path / "sft.parquet"
    convert = [sys.executable, "-m", "data_prep.sft", "--in", str(data / "train.parquet"), "--out"]
    subprocess.run([*convert, str(out)], check=True)
    return out


def _parts(weights: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    groups = {"vision blocks": "visual.blocks.", "merger": "visual.merger.", "llm": "model.layers."}
    return {name: {k: v for k, v in weights.items() if prefix in k} for name, prefix in groups.items()}


def test_verls_sft_trainer_trains_vision_merger_and_llm_on_real_tiles(tmp_path, s2_sft_rows):
    model = build_tiny_model_dir(tmp_path / "model")
    argv, env = sft_command(s2_sft_rows, model, tmp_path / "ckpt", steps=2)
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    before = _parts(load_file(model / "model.safetensors"))
    after = _parts(load_file(final_hf(tmp_path / "ckpt") / "model.safetensors"))
    for part, weights in before.items():
        assert weights, f"no {part} weights found"
        changed = [k for k, v in weights.items() if not torch.equal(v, after[part][k])]
        assert changed, f"verl's SFT trainer left the {part} unchanged"
    assert (tmp_path / "ckpt" / "metrics.jsonl").read_text().count("train/loss") == 2
