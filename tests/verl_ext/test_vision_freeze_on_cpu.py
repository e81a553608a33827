"""Which part a parameter belongs to, and freezing parts before FSDP wraps the model (verl_ext/vision_freeze.py)."""

from __future__ import annotations

import pytest
import torch

from verl_ext.vision_freeze import freeze_parts, part_of, split_names, trainable_parameters


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from transformers import AutoModelForImageTextToText

    from verl_ext.cpu.tiny_qwen25vl import build_tiny_model_dir

    return AutoModelForImageTextToText.from_pretrained(build_tiny_model_dir(tmp_path_factory.mktemp("m") / "model"))


@pytest.mark.parametrize(
    ("name", "part"),
    [
        ("model.visual.blocks.3.attn.qkv.weight", "vision_tower"),
        ("model.visual.patch_embed.proj.weight", "vision_tower"),
        ("visual.merger.mlp.0.weight", "projector"),  # checkpoint naming of the original Qwen2.5-VL
        ("model.visual.deepstack_merger_list.0.norm.weight", "projector"),  # Qwen3-VL
        ("model.multi_modal_projector.linear_1.weight", "projector"),  # LLaVA
        ("model.language_model.layers.0.mlp.up_proj.weight", "language_model"),
        ("lm_head.weight", "language_model"),
        ("model.visualizer.weight", "language_model"),  # a name that merely starts like "visual"
    ],
)
def test_part_of(name, part):
    assert part_of(name) == part


def test_freeze_parts_on_the_real_architecture(model):
    groups = split_names(n for n, _ in model.named_parameters())
    assert all(groups[p] for p in ("vision_tower", "projector", "language_model"))
    frozen = freeze_parts(model, vision_tower=True)
    assert frozen == {"vision_tower": len(groups["vision_tower"]), "projector": 0, "language_model": 0}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(groups["projector"]) | set(groups["language_model"])
    only_vision = torch.nn.Module()
    only_vision.visual = torch.nn.Linear(2, 2)  # every parameter is "visual.*"
    with pytest.raises(ValueError, match="no trainable parameter"):
        freeze_parts(only_vision, vision_tower=True)
    with pytest.raises(ValueError, match="has no vision_tower"):
        freeze_parts(torch.nn.Linear(2, 2), vision_tower=True)
    assert len(trainable_parameters(model)) == sum(p.requires_grad for p in model.parameters())
