"""Micro-batch plumbing of the transformed view, in verl 0.9.1's own layouts (nested/jagged TensorDicts).

- `transformed_micro_batch`: the actor's micro-batch with a transformed view's multi-modal inputs and position ids
  (from the agent loop's `extra_fields["domain_view"]`, a list of views) in place of the original view's; token ids,
  masks and every other field are shared, so the response is teacher-forced identically.
- `response_position_mask`: which positions of the packed token stream carry the logits of response tokens — found by
  running verl's own `no_padding_2_padding` (the function that slices log-probs) on the position indices.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict
from tensordict.tensorclass import NonTensorData, NonTensorStack
from verl.workers.utils.padding import no_padding_2_padding

from verl_ext.transforms import TRANSFORM_NAMES

VIEW_KEY = "domain_view"


def per_sample_values(value) -> list:
    """A per-sample non-tensor field of a micro-batch as a Python list."""
    if isinstance(value, NonTensorStack):
        return [v.data if isinstance(v, NonTensorData) else v for v in value.tolist()]
    if isinstance(value, NonTensorData):
        return list(value.data)
    return list(value)


def domain_views(data: TensorDict) -> list[list[dict]]:
    """Each sample's transformed views (`extra_fields["domain_view"]`, one per transform; several in mixture mode).

    Raises if a sample has none, or if the samples do not all have the same number of views.
    """
    views = []
    for i, extra in enumerate(per_sample_values(data["extra_fields"])):
        sample_views = (extra or {}).get(VIEW_KEY)
        if not sample_views:
            raise RuntimeError(
                f"sample {i} of the micro-batch has no transformed view: set "
                "actor_rollout_ref.rollout.agent.default_agent_loop=domain_single_turn_agent"
            )
        views.append(list(sample_views))
    if len({len(v) for v in views}) > 1:
        raise RuntimeError(f"samples carry different numbers of transformed views: {[len(v) for v in views]}")
    return views


def transform_mask(data: TensorDict) -> torch.Tensor:
    """`[batch]` bit mask of the transforms each sample's views used (bit i = `TRANSFORM_NAMES[i]`)."""
    return torch.tensor(
        [sum(1 << TRANSFORM_NAMES.index(v["transform"]) for v in views) for views in domain_views(data)]
    )


def transformed_micro_batch(data: TensorDict, k: int = 0) -> TensorDict:
    """Shallow copy of `data` whose `multi_modal_inputs` and `position_ids` are those of each sample's view `k`."""
    views = [sample_views[k] for sample_views in domain_views(data)]
    out = data.copy()
    originals = per_sample_values(data["multi_modal_inputs"])
    mm_inputs = []
    for original, view in zip(originals, views, strict=True):
        mm = dict(original)
        mm["pixel_values"] = view["pixel_values"]
        mm["image_grid_thw"] = view["image_grid_thw"]
        mm_inputs.append(mm)
    out["multi_modal_inputs"] = NonTensorStack(*mm_inputs)
    position_ids = data["position_ids"]
    new_rows = [torch.as_tensor(view["position_ids"]).to(position_ids.device) for view in views]  # each (4, L_i)
    out["position_ids"] = _like_position_ids(position_ids, new_rows)
    return out


def _like_position_ids(original: torch.Tensor, rows: list[torch.Tensor]) -> torch.Tensor:
    """Per-sample `(4, L_i)` position ids in the same (nested or padded) layout as `original`."""
    if original.is_nested:
        offsets = torch.tensor([0] + [row.shape[-1] for row in rows], device=rows[0].device).cumsum(0)
        return jagged_position_ids(rows, offsets)
    padded = torch.zeros_like(original)  # (bsz, 4, max_len)
    for i, row in enumerate(rows):
        padded[i, :, : row.shape[-1]] = row
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


def response_position_mask(data: TensorDict, total_nnz: int) -> torch.Tensor:
    """`[total_nnz]` bool: the packed positions whose logits predict a response token (verl's own slicing)."""
    index = torch.arange(total_nnz, device=data["responses"].device if "responses" in data else None)
    positions = no_padding_2_padding(index, data)  # [bsz, max_response_len]
    response_mask = data.select("response_mask").to_padded_tensor()["response_mask"].bool()  # [bsz, max_response]
    mask = torch.zeros(total_nnz, dtype=torch.bool, device=index.device)
    mask[positions[response_mask[:, : positions.shape[1]]]] = True
    return mask
