"""Pure-torch stand-ins for flash-attn's kernels, so verl's remove-padding (packed) path runs on CPU (tests only).

With `actor_rollout_ref.model.use_remove_padding=true` verl packs a micro-batch into one `(1, total_nnz)` sequence and
patches Qwen2-VL / Qwen2.5-VL's text attention with `verl.models.transformers.qwen2_vl.qwen2_vl_attn_forward`, which
calls that module's `flash_attn_varlen_func` (several sequences: cumulative lengths from the position ids) or
transformers' `_flash_attention_forward` (one sequence). That module binds those names from flash-attn on CUDA and
from `transformers.integrations.npu_flash_attention` on Ascend, at import; on a CPU neither exists. This module binds
CPU equivalents under the same names, the way verl binds the NPU ones, when verl imports the module on the cpu
platform (`verl_ext.cpu` installs the hook). Attention itself is `torch.nn.functional.scaled_dot_product_attention`
per packed sequence, in the inputs' dtype: flash-attn's cast of fp32 inputs to bf16 (`fa_peft_integration_check`)
is a GPU kernel requirement, so the CPU binding keeps fp32.

Nothing here runs on the GPU path: only a process whose verl platform is `cpu` gets these bindings.
"""

from __future__ import annotations

from types import ModuleType

import torch
import torch.nn.functional as F

PLATFORM_NAME = "cpu"


def varlen_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int | torch.Tensor | None = None,
    max_seqlen_k: int | torch.Tensor | None = None,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = True,
    window_size: tuple[int, int] = (-1, -1),
    **kwargs,
) -> torch.Tensor:
    """flash-attn's `flash_attn_varlen_func` contract: packed sequences, attention within each one.

    Args:
        q: `[total_q, heads, dim]`; k, v: `[total_k, heads_k, dim]` (heads_k divides heads: grouped-query attention).
        cu_seqlens_q, cu_seqlens_k: `[n_seq + 1]` cumulative lengths (int32 or int64).
        causal: a causal mask inside each sequence (aligned bottom-right, as flash-attn ≥ 2.1).

    Returns:
        `[total_q, heads, dim]`.
    """
    if window_size not in ((-1, -1), None) and tuple(window_size) != (-1, -1):
        raise NotImplementedError("the CPU varlen attention has no sliding window")
    if dropout_p:
        raise NotImplementedError("the CPU varlen attention has no dropout")
    out = torch.empty_like(q)
    groups = q.shape[1] // k.shape[1]
    bounds_q, bounds_k = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    for (q0, q1), (k0, k1) in zip(zip(bounds_q, bounds_q[1:]), zip(bounds_k, bounds_k[1:]), strict=True):
        if q1 == q0:
            continue
        qs = q[q0:q1].transpose(0, 1)  # [heads, Lq, dim]
        ks = k[k0:k1].transpose(0, 1).repeat_interleave(groups, dim=0)  # [heads, Lk, dim]
        vs = v[k0:k1].transpose(0, 1).repeat_interleave(groups, dim=0)  # [heads, Lk, dim]
        mask = None
        if causal:  # bottom-right aligned: query i sees keys j <= i + (Lk - Lq)
            lq, lk = q1 - q0, k1 - k0
            mask = torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril(diagonal=lk - lq)  # [Lq, Lk]
        attended = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=mask, scale=softmax_scale)  # [heads, Lq, dim]
        out[q0:q1] = attended.transpose(0, 1)
    return out


def flash_attention_forward(
    query_states: torch.Tensor,
    key_states: torch.Tensor,
    value_states: torch.Tensor,
    attention_mask: torch.Tensor | None,
    query_length: int,
    is_causal: bool = True,
    softmax_scale: float | None = None,
    sliding_window: int | None = None,
    **kwargs,
) -> torch.Tensor:
    """transformers' `_flash_attention_forward` contract: `[bsz, seq, heads, dim]` in and out, optional 2-D padding
    mask `[bsz, seq]` (1 = token)."""
    if sliding_window is not None:
        raise NotImplementedError("the CPU flash-attention stand-in has no sliding window")
    bsz, seq_q = query_states.shape[:2]
    lengths = (
        torch.full((bsz,), seq_q, dtype=torch.long)
        if attention_mask is None
        else attention_mask.to(torch.long).sum(-1).cpu()
    )
    out = torch.zeros_like(query_states)
    for b in range(bsz):
        n = int(lengths[b])
        bounds = torch.tensor([0, n])
        if attention_mask is None:
            out[b] = varlen_attention(
                query_states[b],
                key_states[b],
                value_states[b],
                bounds,
                bounds,
                softmax_scale=softmax_scale,
                causal=is_causal,
            )
        else:  # left- or right-padded: attend over the valid tokens only
            keep = attention_mask[b].bool()
            out[b, keep] = varlen_attention(
                query_states[b, keep],
                key_states[b, keep],
                value_states[b, keep],
                bounds,
                bounds,
                softmax_scale=softmax_scale,
                causal=is_causal,
            )
    return out


def keep_dtype(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, target_dtype: torch.dtype | None = None):
    """`fa_peft_integration_check` without the bf16 cast (a GPU kernel requirement; the CPU kernel takes fp32)."""
    return q, k, v


def bind_cpu_flash_attention(qwen2_vl: ModuleType) -> None:
    """Bind the CPU kernels in `verl.models.transformers.qwen2_vl` when the verl platform is `cpu` (else nothing)."""
    from verl.utils.device import get_device_name

    if get_device_name() != PLATFORM_NAME:
        return
    qwen2_vl.flash_attn_varlen_func = varlen_attention
    qwen2_vl.flash_attn_func = None  # never called on the patched path; bound so a stray use fails loudly
    qwen2_vl._flash_attention_forward = flash_attention_forward
    qwen2_vl.fa_peft_integration_check = keep_dtype
    qwen2_vl._flash_supports_window_size = False
    qwen2_vl._flash_supports_deterministic = False
    qwen2_vl._flash_use_top_left_mask = False
