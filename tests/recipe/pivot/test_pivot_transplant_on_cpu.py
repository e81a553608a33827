"""The transplant (evolved encoder + fresh projector + base LLM), the SFT stages' overrides and rows, the study
runner's spec handling and report (fast: no training)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from recipe.pivot.sft import STAGES, link_final_hf, sft_rows, stage_overrides
from recipe.pivot.study.runner import StudyError, final_hf, load_spec, plan
from recipe.pivot.transplant import main as transplant_main
from recipe.pivot.transplant import transplant
from verl_ext.vision_freeze import part_of


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from verl_ext.cpu.tiny_qwen25vl import build_tiny_model_dir

    root = tmp_path_factory.mktemp("tx")
    return build_tiny_model_dir(root / "base", seed=0), build_tiny_model_dir(root / "evolved", seed=1)


def test_transplant_takes_the_encoder_reinitialises_the_projector_keeps_the_llm(tmp_path, models):
    base, evolved = models
    info = transplant(base, evolved, tmp_path / "out", seed=3)
    a, b, t = (load_file(p / "model.safetensors") for p in (base, evolved, tmp_path / "out"))
    for name, tensor in t.items():
        part = part_of(name)
        if part == "vision_tower":
            assert torch.equal(tensor, b[name]), name
        elif part == "language_model":
            assert torch.equal(tensor, a[name]), name
    merger = [n for n in t if part_of(n) == "projector" and n.endswith("weight") and t[n].ndim == 2]
    assert merger and all(not torch.equal(t[n], a[n]) and abs(t[n].std().item() - 0.02) < 0.01 for n in merger)
    assert info["relative_change_vs_base"]["language_model"] == 0.0
    assert json.loads((tmp_path / "out" / "transplant.json").read_text())["seed"] == 3
    again = transplant(base, evolved, tmp_path / "again", seed=3)  # seeded: the same projector
    assert torch.equal(load_file(tmp_path / "again" / "model.safetensors")[merger[0]], t[merger[0]])
    assert again["encoder_tensors_copied"] == info["encoder_tensors_copied"] > 0


def test_transplant_cli_refuses_non_checkpoints(tmp_path, models, capsys):
    assert transplant_main(["--base", str(tmp_path), "--encoder", str(models[1]), "--out", str(tmp_path / "o")]) == 2
    assert "not a Hugging Face checkpoint" in capsys.readouterr().err


def test_stage_overrides_and_sft_rows(tmp_path):
    assert stage_overrides("all") == []
    assert stage_overrides("projector")[1:] == [
        "+engine.freeze_vision_tower=true",
        "+engine.freeze_language_model=true",
    ]
    assert stage_overrides("projector_llm")[2] == "+engine.freeze_language_model=false"
    assert set(STAGES) == {"all", "projector", "projector_llm"}
    with pytest.raises(ValueError, match="--stage 'encoder'"):
        stage_overrides("encoder")
    row = {"prompt": [{"role": "user", "content": "<image>Q"}], "images": [{"bytes": b"x", "path": None}]}
    pd.DataFrame([{**row, "data_source": "s", "chosen": "<answer>a</answer>", "rejected": "b"}]).to_parquet(
        tmp_path / "p.parquet"
    )
    assert sft_rows(tmp_path / "p.parquet", tmp_path / "sft.parquet") == 1
    out = pd.read_parquet(tmp_path / "sft.parquet").to_dict(orient="records")[0]
    assert [m["role"] for m in out["messages"]] == ["user", "assistant"]
    assert out["messages"][1]["content"] == "<answer>a</answer>"  # the chosen response, as the paper's SFT


def test_final_hf_resolution_and_link(tmp_path):
    assert final_hf(tmp_path) is None and link_final_hf(tmp_path) is None
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("4")
    hf = tmp_path / "global_step_4" / "actor" / "huggingface"
    hf.mkdir(parents=True)
    (hf / "config.json").write_text("{}")
    assert final_hf(tmp_path) == hf


def test_study_spec_checks_and_plan(tmp_path):
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text("vars: {base: b, train: t, test: v, out: o}\ncommands: {pairs: x}\n")
    with pytest.raises(StudyError, match="commands .* are missing"):
        load_spec(spec_path)
    spec_path.write_text("vars: {}\nfoo: 1\n")
    with pytest.raises(StudyError, match="unknown top-level keys"):
        load_spec(spec_path)
    from pathlib import Path

    spec = load_spec(
        Path(__file__).resolve().parents[3] / "recipe/pivot/study/cpu_tiny.yaml",
        {"base": "B", "train": "T", "test": "V", "out": str(tmp_path), "pairs": "my.parquet", "dpo_extra": "[x=1]"},
    )
    names = [s.name for s in plan(spec)]
    assert names[0] == "sft_rows"  # user pairs: no pairs stage
    assert spec["vars"]["dpo_extra"] == ["x=1"]
    dpo = next(s for s in plan(spec) if s.name == "dpo")
    assert dpo.variables["pairs_file"] == "my.parquet" and dpo.variables["ckpt"] == str(tmp_path / "dpo")


def test_transplant_keeps_a_dpo_sized_update_of_an_fp32_donor_into_a_bf16_base(tmp_path, models):
    # Qwen2.5-VL ships in bf16, verl saves fp32: a DPO-sized step (lr 1e-6 · Adam's ~unit step) is far below bf16's
    # spacing (2^-8 relative), so a cast to the base's bf16 rounds most of it away.
    from transformers import AutoModelForImageTextToText

    from verl_ext.probes.weights import vision_state

    base_fp32, _ = models
    base = tmp_path / "base_bf16"
    model = AutoModelForImageTextToText.from_pretrained(base_fp32, dtype=torch.float32).to(torch.bfloat16)
    model.save_pretrained(base, safe_serialization=True)
    for extra in base_fp32.iterdir():  # tokenizer / processor files
        if not (base / extra.name).exists():
            (base / extra.name).write_bytes(extra.read_bytes())
    donor = tmp_path / "donor_fp32"
    model = model.to(torch.float32)  # the base's values, exactly, in fp32
    generator = torch.Generator().manual_seed(0)
    update = {}
    with torch.no_grad():
        for name, param in model.named_parameters():
            if part_of(name) == "vision_tower":
                step = 1e-6 * torch.randn(param.shape, generator=generator)  # lr 1e-6, unit-sized Adam step
                param.add_(step)
                update[name.split("visual.", 1)[1]] = step
    model.save_pretrained(donor, safe_serialization=True)

    info = transplant(base, donor, tmp_path / "out", seed=0)
    out, given, before = vision_state(tmp_path / "out", cast=None), vision_state(donor, cast=None), vision_state(base)
    for name, step in update.items():
        assert torch.equal(out[name], given[name]), name  # the donor's fp32 values, bit for bit
        kept = out[name].float() - before[name]
        cosine = torch.nn.functional.cosine_similarity(kept.flatten(), step.flatten(), dim=0)
        assert cosine > 0.999, (name, float(cosine))
    llm = load_file(tmp_path / "out" / "model.safetensors")
    base_llm = load_file(base / "model.safetensors")
    for name, tensor in llm.items():
        if part_of(name) == "language_model":
            assert torch.equal(tensor, base_llm[name].float()), name  # bf16 values held exactly in fp32
    assert info["dtype"] == "float32"
