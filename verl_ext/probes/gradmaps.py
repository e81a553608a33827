"""Gradient-magnitude maps and Grad-CAM of a whole vision-language model on (image, prompt, target answer) rows.

PIVOT's "Grad-CAM" is the per-token L1 norm of the training loss's gradient at the projector output (a gradient
magnitude map, named so here). Both maps use the same loss for every checkpoint, so encoders are compared under one
objective: the teacher-forced negative log-likelihood of the target answer (the SFT loss of the row's chosen
response), summed over its tokens.

* gradient magnitude: ‖∂L/∂e_k‖₁ for each merged image token e_k (the projector output the LLM reads), on the
  merge grid (raster order: the model's own reverse permutation);
* Grad-CAM (Selvaraju et al. 2017) on the last vision block, A = its output (raster order, `window_to_raster`),
  score = log-likelihood = −L: α_d = mean over patches of ∂score/∂A_d, map = ReLU(Σ_d α_d A_d).
Both are scaled to [0, 1] per image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from verl_ext.probes.features import window_to_raster


def _normalise(x: torch.Tensor) -> np.ndarray:
    x = x.detach().float()
    span = (x.max() - x.min()).clamp_min(1e-12)
    return ((x - x.min()) / span).numpy()


def load_model(path: str, device: str = "cpu", dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """(model, processor) of a local HF vision-language checkpoint, eval mode, sdpa attention."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype, attn_implementation="sdpa").to(device)
    return model.eval(), AutoProcessor.from_pretrained(path)


def _visual(model: Any) -> Any:
    return model.model.visual if hasattr(model, "model") and hasattr(model.model, "visual") else model.visual


def row_maps(model: Any, processor: Any, messages: list[dict], image: Any, target: str, input_size: int) -> dict:
    """The two maps of one row: {"grad": `[gh/2, gw/2]`, "cam": `[gh, gw]`, "loss": float}.

    Args:
        messages: chat messages whose user content holds one {"type": "image"} entry.
        image: the PIL image (resized to `input_size`).
        target: the answer text whose likelihood is the score.
        input_size: side in pixels (a multiple of 28).
    """
    from transformers.vision_utils import get_vision_window_index

    visual = _visual(model)
    device = next(model.parameters()).device
    image = image.convert("RGB").resize((input_size, input_size))
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    pixels = input_size * input_size
    enc = processor(
        text=[prompt], images=[image], images_kwargs={"size": {"shortest_edge": pixels, "longest_edge": pixels}}
    )
    tokenizer = processor.tokenizer
    target_ids = tokenizer.encode(target, add_special_tokens=False) + [tokenizer.eos_token_id]
    prompt_ids = torch.as_tensor(enc["input_ids"][0])
    ids = torch.cat([prompt_ids, torch.tensor(target_ids)]).unsqueeze(0).to(device)  # [1, L]
    labels = ids.clone()
    labels[0, : len(prompt_ids)] = -100
    captured: dict[str, torch.Tensor] = {}

    def keep(name):
        def hook(_module, _inputs, output):
            tensor = output.pooler_output if name == "tokens" else (output[0] if isinstance(output, tuple) else output)
            tensor.retain_grad()
            captured[name] = tensor

        return hook

    hooks = [visual.register_forward_hook(keep("tokens")), visual.blocks[-1].register_forward_hook(keep("last"))]
    try:
        model.zero_grad(set_to_none=True)
        grid = torch.as_tensor(enc["image_grid_thw"]).to(device)
        out = model(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            pixel_values=torch.as_tensor(enc["pixel_values"]).to(device, next(visual.parameters()).dtype),
            image_grid_thw=grid,
        )
        logits = out.logits[0, :-1].float()  # [L - 1, V]
        nll = torch.nn.functional.cross_entropy(logits, labels[0, 1:], ignore_index=-100, reduction="sum")
        nll.backward()
    finally:
        for hook in hooks:
            hook.remove()
    merge = visual.spatial_merge_size
    _, gh, gw = grid[0].tolist()
    grad = captured["tokens"].grad.abs().sum(-1).reshape(gh // merge, gw // merge)  # [gh/2, gw/2] L1 per token
    window_index, _ = get_vision_window_index(grid.cpu(), merge, visual.window_size, visual.patch_size)
    act = window_to_raster(captured["last"].detach().cpu().float(), grid.cpu(), window_index, merge)[0]  # [gh, gw, D]
    score_grad = -window_to_raster(captured["last"].grad.cpu().float(), grid.cpu(), window_index, merge)[0]
    alpha = score_grad.mean(dim=(0, 1))  # [D]
    cam = torch.relu((act * alpha).sum(-1))  # [gh, gw]
    return {"grad": _normalise(grad.cpu()), "cam": _normalise(cam), "loss": float(nll.detach())}


def gradient_maps(model: Any, processor: Any, rows: Sequence[dict[str, Any]], input_size: int) -> list[dict[str, Any]]:
    """`row_maps` for each row ({"messages", "image", "target"}), plus the resized image for the overlays."""
    out = []
    for row in rows:
        maps = row_maps(model, processor, row["messages"], row["image"], row["target"], input_size)
        out.append({**maps, "image": np.asarray(row["image"].convert("RGB").resize((input_size, input_size)))})
    return out
