"""The PIVOT transplant: an evolved vision encoder (DPO or SFT) in the base model, with a freshly initialised projector.

    python -m recipe.pivot.transplant --base ckpt/base --encoder ckpt/dpo/final_hf --out runs/transplant_dpo [--seed 0]
    python -m recipe.pivot.transplant --base ckpt/base --encoder ckpt/base --out runs/transplant_base   # the control

The output folder is a loadable HF checkpoint (safetensors, config, processor, tokenizer) whose
* vision encoder (patch embedding + blocks) = the `--encoder` checkpoint's,
* projector (`visual.merger`) = re-initialised with the model's own init scheme (`_init_weights`), seeded,
* LLM = the base model's,
plus `transplant.json` (provenance, and the relative change of each part against the base). Training then freezes the
encoder and trains the projector (stage `projector`) and then projector + LLM (stage `full`) through verl's SFT
trainer: `python -m recipe.pivot.sft --stage ...` (recipe/pivot/sft.py). The paper's recipe freezes the evolved
encoder under a fresh projector AND a fresh LLM; keeping the base LLM (re-initialising only the projector) is the
choice here, so that the three encoders (base, SFT, DPO) are compared under identical, affordable training.

Precision: the output is written in float32 (`OUTPUT_DTYPE`), whatever the base's dtype, and the donor's encoder is
copied exactly as stored (a copy that would round is refused). Qwen2.5-VL ships in bf16 and verl saves fp32: casting
the donor to the base's bf16 zeroes 42-79 % of the elements of a DPO-sized update (lr 1e-6) while an SFT-sized one
survives, which would bias the transplant table against DPO. float32 holds bf16, fp16 and fp32 values exactly, so the
LLM keeps the base's values and every arm (the base-encoder control included) is written the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from verl_ext.vision_freeze import part_of

INFO_FILE = "transplant.json"
OUTPUT_DTYPE = torch.float32


def _visual(model: torch.nn.Module) -> torch.nn.Module:
    owner = model.model if hasattr(model, "model") and hasattr(model.model, "visual") else model
    if not hasattr(owner, "visual") or not hasattr(owner.visual, "merger"):
        raise ValueError(f"{type(model).__name__}: no visual.merger (a Qwen2-VL-family model is needed)")
    return owner.visual


def reinit_projector(model: torch.nn.Module, seed: int) -> int:
    """Re-initialise the projector (merger) in place with the model's own `_init_weights`, seeded; returns #tensors.

    Note:
        transformers marks loaded parameters `_is_hf_initialized` so that `_init_weights` skips them; the flag is
        cleared on the merger's parameters first.
    """
    visual = _visual(model)
    params = list(visual.merger.parameters())
    for p in params:
        if hasattr(p, "_is_hf_initialized"):
            p._is_hf_initialized = False
    torch.manual_seed(seed)
    with torch.no_grad():
        for module in visual.merger.modules():
            visual._init_weights(module)
    return len(params)


def copy_encoder(target: torch.nn.Module, encoder_dir: str | os.PathLike) -> int:
    """Copy every vision-tower tensor (not the projector) of the checkpoint `encoder_dir` into `target`, read as
    stored (verl's HF export may label fp32 weights bfloat16 in its config: loading the model would round them);
    returns the number of tensors copied.

    Raises:
        ValueError: the two vision towers differ in names or shapes, or `target`'s dtype would round a donor tensor.
    """
    from verl_ext.probes.weights import vision_state

    src = {k: v for k, v in vision_state(encoder_dir, cast=None).items() if part_of("visual." + k) == "vision_tower"}
    dst = {n.split("visual.", 1)[1]: p for n, p in target.named_parameters() if part_of(n) == "vision_tower"}
    if set(src) != set(dst):
        raise ValueError(f"the encoders differ: {sorted(set(src) ^ set(dst))[:4]}")
    with torch.no_grad():
        for name, param in dst.items():
            if param.shape != src[name].shape:
                raise ValueError(f"{name}: {tuple(param.shape)} vs {tuple(src[name].shape)}")
            value = src[name].to(param.dtype)
            if value.dtype != src[name].dtype and not torch.equal(value.to(src[name].dtype), src[name]):
                raise ValueError(
                    f"{name}: the donor's {src[name].dtype} values would be rounded to {param.dtype} (a small update, "
                    f"e.g. DPO's, would be lost); load the base in {src[name].dtype} or wider"
                )
            param.copy_(value)
    return len(dst)


def part_changes(model: torch.nn.Module, base: dict[str, torch.Tensor]) -> dict[str, float]:
    """‖W − W_base‖ / ‖W_base‖ per part (vision_tower, projector, language_model)."""
    diff: dict[str, float] = {}
    norm: dict[str, float] = {}
    for name, p in model.named_parameters():
        part = part_of(name)
        diff[part] = diff.get(part, 0.0) + float(((p.detach().float() - base[name]) ** 2).sum())
        norm[part] = norm.get(part, 0.0) + float((base[name] ** 2).sum())
    return {k: diff[k] ** 0.5 / max(norm[k] ** 0.5, 1e-12) for k in diff}


_NOT_ARCHITECTURE = ("dtype", "torch_dtype", "_attn_implementation", "attn_implementation", "transformers_version")


def _architecture(vision_config: Any) -> dict[str, Any]:
    """The vision config without what a checkpoint may store differently for the same weights (dtype, attention)."""
    return {k: v for k, v in vision_config.to_dict().items() if k not in _NOT_ARCHITECTURE}


def transplant(base: str | os.PathLike, encoder: str | os.PathLike, out: str | os.PathLike, seed: int = 0) -> dict:
    """Write the transplanted checkpoint to `out` (atomically: a temporary sibling renamed into place)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    base, encoder, out = Path(base), Path(encoder), Path(out)
    from transformers import AutoConfig

    model = AutoModelForImageTextToText.from_pretrained(base, dtype=OUTPUT_DTYPE)  # see the module docstring
    if _architecture(model.config.vision_config) != _architecture(AutoConfig.from_pretrained(encoder).vision_config):
        raise ValueError(f"{encoder}: its vision architecture differs from {base}'s")
    reference = {n: p.detach().float().clone() for n, p in model.named_parameters()}
    copied = copy_encoder(model, encoder)
    reset = reinit_projector(model, seed)
    info: dict[str, Any] = {
        "base": str(base),
        "encoder": str(encoder),
        "seed": seed,
        "dtype": str(OUTPUT_DTYPE).removeprefix("torch."),
        "encoder_tensors_copied": copied,
        "projector_tensors_reinitialised": reset,
        "relative_change_vs_base": part_changes(model, reference),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        AutoProcessor.from_pretrained(base).save_pretrained(tmp)
        for extra in ("generation_config.json", "chat_template.json", "chat_template.jinja"):
            if (base / extra).exists() and not (tmp / extra).exists():
                shutil.copy2(base / extra, tmp / extra)
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipe.pivot.transplant", description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="base model folder (LLM, projector architecture, processor)")
    parser.add_argument("--encoder", required=True, help="checkpoint whose vision encoder is transplanted")
    parser.add_argument("--out", required=True, help="output folder (replaced if it exists)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the projector's re-initialisation")
    args = parser.parse_args(argv)
    for flag, path in (("--base", args.base), ("--encoder", args.encoder)):
        if not (Path(path) / "config.json").is_file():
            print(f"error: {flag} {path}: not a Hugging Face checkpoint folder (no config.json)", file=sys.stderr)
            return 2
    try:
        info = transplant(args.base, args.encoder, args.out, args.seed)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    changes = info["relative_change_vs_base"]
    print(f"transplanted {info['encoder_tensors_copied']} encoder tensors into {args.out}: {changes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
