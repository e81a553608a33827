"""Micro-batch plumbing of the transformed view, in verl 0.9.1's own layouts (nested/jagged TensorDicts).

- `ViewBuilder.micro_batch`: the actor's micro-batch with view `k` of each sample in place of the original's
  multi-modal inputs and position ids. The view is built here, in the actor, from the sample's own processed pixels
  (`verl_ext.views.patch_view`); the agent loop only sends the transform's name and seed
  (`extra_fields["domain_view"]`, a list of views). Token ids, masks and every other field are shared, so the
  response is teacher-forced identically. A row without an image (verl's synthetic padding rows copy sample 0's
  fields but are text-only) or whose image tokens do not match its grid keeps its original inputs and is marked
  invalid: it contributes nothing to DC and D_i.
- `response_position_mask`: which positions of the packed token stream carry the logits of (in-scope) response
  tokens — found by running verl's own `no_padding_2_padding` (the function that slices log-probs) on the position
  indices; `answer_token_mask` gives the answer scope's tokens from the response token ids.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tensordict import TensorDict
from tensordict.tensorclass import NonTensorData, NonTensorStack
from verl.workers.utils.padding import no_padding_2_padding

from recipe.domain_grpo.keys import VIEW_KEY
from verl_ext.domain_loss import answer_span
from verl_ext.views import PatchLayout, image_token_count, mrope_position_ids, patch_view


def per_sample_values(value) -> list:
    """A per-sample non-tensor field of a micro-batch as a Python list."""
    if isinstance(value, NonTensorStack):
        return [v.data if isinstance(v, NonTensorData) else v for v in value.tolist()]
    if isinstance(value, NonTensorData):
        return list(value.data)
    return list(value)


def domain_views(data: TensorDict) -> list[list[dict]]:
    """Each sample's view specs `{"transform", "seed"}` (`extra_fields["domain_view"]`; [] for a sample without)."""
    if "extra_fields" not in data.keys():
        return [[] for _ in range(data.batch_size[0])]
    return [list((extra or {}).get(VIEW_KEY) or []) for extra in per_sample_values(data["extra_fields"])]


def row_name(data: TensorDict, i: int) -> str:
    """`data_source` + `extra_info.index` of sample `i`, for error messages."""
    source = per_sample_values(data["data_source"])[i] if "data_source" in data.keys() else "?"
    infos = per_sample_values(data["extra_info"]) if "extra_info" in data.keys() else []
    index = (infos[i] or {}).get("index", "?") if i < len(infos) else "?"
    return f"row {source}/{index} (micro-batch sample {i})"


@dataclass
class ViewBuilder:
    """Builds the transformed views of a micro-batch from its own pixels (see the module docstring).

    Attributes:
        layout: the processor's patch geometry and normalisation.
        get_rope_index: the model's `get_rope_index` bound to the processor (verl's `hf_processor` binds it).
        image_token_id: id of `<|image_pad|>`.
        params: `domain.transforms.params` (per-transform parameters).
    """

    layout: PatchLayout
    get_rope_index: Any
    image_token_id: int
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_processor(cls, processor: Any, params: Mapping[str, Mapping[str, Any]] | None = None) -> ViewBuilder:
        """From verl's processor (`HFModelConfig.get_processor()`: a Qwen2.5-VL processor, `get_rope_index` bound)."""
        if not hasattr(processor, "image_processor") or not hasattr(processor, "get_rope_index"):
            raise RuntimeError(
                "the domain terms need a vision-language model whose processor has an image processor and verl's "
                f"bound get_rope_index (Qwen2-VL / Qwen2.5-VL); got {type(processor).__name__}"
            )
        image_token_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
        return cls(
            PatchLayout.from_processor(processor.image_processor),
            processor.get_rope_index,
            image_token_id,
            dict(params or {}),
        )

    def validity(self, data: TensorDict) -> list[list[bool]]:
        """`valid[k][i]`: sample i asks for a view k and has a matching image to build it from."""
        views = domain_views(data)
        originals = _mm_inputs(data)
        input_ids = _input_rows(data)
        images = [self._has_matching_image(originals[i], input_ids[i]) for i in range(len(views))]
        return [
            [k < len(views[i]) and images[i] for i in range(len(views))] for k in range(max(map(len, views), default=0))
        ]

    def micro_batch(self, data: TensorDict, k: int) -> tuple[TensorDict, list[bool]]:
        """Shallow copy of `data` with each sample's view `k`, and which samples got one (`[batch]` bools)."""
        views = domain_views(data)
        originals = _mm_inputs(data)
        input_ids = _input_rows(data)
        old_positions = _position_rows(data["position_ids"], [len(ids) for ids in input_ids])
        mm_inputs, positions, valid = [], [], []
        for i, (ids, rows) in enumerate(zip(input_ids, old_positions, strict=True)):
            original = originals[i]
            spec = views[i][k] if k < len(views[i]) else None
            if spec is None or not self._has_matching_image(original, ids):
                mm_inputs.append(original)
                positions.append(rows)
                valid.append(False)
                continue
            try:
                pixels, grid = patch_view(
                    original["pixel_values"],
                    original["image_grid_thw"],
                    spec["transform"],
                    self.layout,
                    seed=int(spec.get("seed", 0)),
                    params=self.params.get(spec["transform"]),
                )
                if not torch.equal(grid.cpu(), original["image_grid_thw"].cpu()):  # e.g. rot90 on a non-square image
                    rows = mrope_position_ids(
                        self.get_rope_index, ids.cpu(), torch.ones_like(ids.cpu()), grid.cpu(), self.image_token_id
                    ).to(rows)
            except Exception as err:
                raise RuntimeError(
                    f"cannot build the {spec.get('transform')!r} view of {row_name(data, i)}: {err}"
                ) from err
            mm_inputs.append(
                {**original, "pixel_values": pixels, "image_grid_thw": grid.to(original["image_grid_thw"])}
            )
            positions.append(rows)
            valid.append(True)
        out = data.copy()
        if "multi_modal_inputs" in data.keys():
            out["multi_modal_inputs"] = NonTensorStack(*mm_inputs)
        out["position_ids"] = _like_position_ids(data["position_ids"], positions)
        return out, valid

    def _has_matching_image(self, mm_inputs: Mapping[str, Any], ids: torch.Tensor) -> bool:
        """The sample has pixels, and its `<|image_pad|>` tokens are exactly those of its grid."""
        if mm_inputs.get("pixel_values") is None or mm_inputs.get("image_grid_thw") is None:
            return False
        n_tokens = int((ids == self.image_token_id).sum())
        return n_tokens > 0 and n_tokens == image_token_count(mm_inputs["image_grid_thw"], self.layout.merge_size)


def _mm_inputs(data: TensorDict) -> list[dict]:
    """Each sample's `multi_modal_inputs` as a dict ({} for a text-only sample)."""
    if "multi_modal_inputs" not in data.keys():
        return [{} for _ in range(data.batch_size[0])]
    return [dict(mm or {}) for mm in per_sample_values(data["multi_modal_inputs"])]


def _input_rows(data: TensorDict) -> list[torch.Tensor]:
    """Each sample's token ids `[L_i]`."""
    input_ids = data["input_ids"]
    return list(input_ids.unbind()) if input_ids.is_nested else list(input_ids)


def transform_mask(data: TensorDict, valid: Sequence[Sequence[bool]], names: Sequence[str]) -> torch.Tensor:
    """`[batch]` bit mask of the transforms of each sample's BUILT views (bit i = `names[i]`, the configured names).

    Args:
        valid: `valid[k][i]` whether sample i's view k is built (`ViewBuilder.validity`).
        names: `domain.transforms.names` (every process has the same config, so the bits agree).
    """
    bits = []
    for i, sample_views in enumerate(domain_views(data)):
        mask = 0
        for k, spec in enumerate(sample_views):
            if k < len(valid) and valid[k][i] and spec["transform"] in names:
                mask |= 1 << list(names).index(spec["transform"])
        bits.append(mask)
    return torch.tensor(bits, dtype=torch.long)


def _position_rows(position_ids: torch.Tensor, lengths: Sequence[int]) -> list[torch.Tensor]:
    """Per-sample `(4, L_i)` (or `(L_i,)`) position ids from verl's nested or padded layout."""
    if position_ids.is_nested:
        return list(position_ids.unbind())
    return [row[..., :n] for row, n in zip(position_ids, lengths, strict=True)]


def _like_position_ids(original: torch.Tensor, rows: list[torch.Tensor]) -> torch.Tensor:
    """Per-sample `(4, L_i)` position ids in the same (nested or padded) layout as `original`."""
    if original.is_nested:
        offsets = torch.tensor([0] + [row.shape[-1] for row in rows], device=rows[0].device).cumsum(0)
        if original.dim() == 3:
            return jagged_position_ids(rows, offsets)
        return torch.nested.nested_tensor_from_jagged(torch.cat(rows, dim=-1), offsets)
    padded = torch.zeros_like(original)  # (bsz, 4, max_len)
    for i, row in enumerate(rows):
        padded[i, ..., : row.shape[-1]] = row
    return padded


def jagged_position_ids(rows: list[torch.Tensor], offsets: torch.Tensor) -> torch.Tensor:
    """Nested `(bsz, 4, j)` position ids, ragged along the token dimension (dim 2) whatever the lengths.

    `torch.nested.as_nested_tensor` infers the ragged dimension and, when every row has the same `(4, L)` shape, picks
    dim 1 (the 4) instead — the layout verl's micro-batch split then breaks on.
    """
    return torch.nested.nested_tensor_from_jagged(torch.cat(rows, dim=-1), offsets, jagged_dim=2)


def repair_position_ids(data: TensorDict) -> None:
    """Rebuild 3-D nested `position_ids` made ragged on the wrong dimension (in place; no-op when they are right).

    When every sequence of a batch has the same length, the (4, L) rows come back from TransferQueue as a nested tensor
    ragged along dim 1, and verl's `maybe_fix_3d_position_ids` only relabels the ragged index, so its offsets count
    the 4 rows instead of the tokens; `update_actor` then fails in `split_with_sizes`. This happens with plain GRPO
    too, e.g. whenever every response of a batch hits the length limit.
    """
    position_ids, input_ids = data.get("position_ids", None), data.get("input_ids", None)
    if position_ids is None or input_ids is None or not (position_ids.is_nested and input_ids.is_nested):
        return
    lengths = input_ids.offsets().diff()
    if position_ids.dim() != 3 or torch.equal(position_ids.offsets().diff().to(lengths), lengths):
        return
    values = position_ids.values()  # (bsz * 4, L): the rows were stacked along the wrong dimension
    rows = list(values.reshape(len(lengths), -1, values.shape[-1]).unbind())  # each (4, L)
    data["position_ids"] = jagged_position_ids(rows, input_ids.offsets())


def sample_positions(data: TensorDict, total_nnz: int) -> torch.Tensor:
    """`[total_nnz]` the sample each position of the packed token stream belongs to (verl's NO_PADDING layout)."""
    lengths = data["input_ids"].offsets().diff()  # [bsz]
    owner = torch.repeat_interleave(torch.arange(len(lengths), device=lengths.device), lengths)  # [nnz of the batch]
    if owner.numel() < total_nnz:  # a static / sequence-parallel pad at the end belongs to no sample
        owner = torch.cat([owner, owner.new_full((total_nnz - owner.numel(),), -1)])
    return owner[:total_nnz]


def response_position_mask(data: TensorDict, total_nnz: int, token_mask: torch.Tensor | None = None) -> torch.Tensor:
    """`[total_nnz]` bool: the packed positions whose logits predict a response token (verl's own slicing).

    Args:
        token_mask: optional `[bsz, max_response_len]` bool, the response tokens to keep (e.g. the answer span).
    """
    index = torch.arange(total_nnz, device=data["responses"].device if "responses" in data else None)
    positions = no_padding_2_padding(index, data)  # [bsz, max_response_len]
    response_mask = data.select("response_mask").to_padded_tensor()["response_mask"].bool()  # [bsz, max_response]
    response_mask = response_mask[:, : positions.shape[1]]
    if token_mask is not None:
        response_mask = response_mask & token_mask[:, : positions.shape[1]].to(response_mask.device)
    mask = torch.zeros(total_nnz, dtype=torch.bool, device=index.device)
    mask[positions[response_mask]] = True
    return mask


def answer_token_mask(data: TensorDict, token_text: Callable[[int], str]) -> torch.Tensor:
    """`[bsz, max_response_len]` bool: the response tokens inside each sample's answer tags (`answer_span`).

    Args:
        token_text: a token id's text (the tokenizer's decode of that one id).
    """
    responses = data["responses"]
    rows = list(responses.unbind()) if responses.is_nested else list(responses)
    width = max((len(row) for row in rows), default=0)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, row in enumerate(rows):
        inside = answer_span([token_text(int(t)) for t in row.tolist()])
        mask[i, : len(inside)] = torch.tensor(inside, dtype=torch.bool)
    return mask
