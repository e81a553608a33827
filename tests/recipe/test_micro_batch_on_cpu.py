"""Micro-batch plumbing: position ids ragged on the right dimension, repaired when verl's packing got it wrong."""

import torch
from tensordict import TensorDict

from recipe.domain_grpo.micro_batch import jagged_position_ids, repair_position_ids


def _rows(lengths):
    return [torch.arange(4 * n).view(4, n) + 1000 * i for i, n in enumerate(lengths)]


def _offsets(lengths):
    return torch.tensor([0, *lengths]).cumsum(0)


def test_equal_lengths_stay_ragged_on_tokens():
    rows = _rows([6, 6, 6])
    fixed = jagged_position_ids(rows, _offsets([6, 6, 6]))
    assert fixed._ragged_idx == 2 and fixed.offsets().tolist() == [0, 6, 12, 18]
    assert all(torch.equal(a, b) for a, b in zip(fixed.unbind(), rows))
    # what torch infers for the same rows (the bug this avoids): ragged on the 4 rows
    assert torch.nested.as_nested_tensor(rows, layout=torch.jagged).offsets().tolist() == [0, 4, 8, 12]


def test_repair_rebuilds_what_verls_packing_broke_and_leaves_good_batches_alone():
    lengths = [6, 6, 6]
    rows = _rows(lengths)
    input_ids = torch.nested.nested_tensor_from_jagged(torch.arange(18), _offsets(lengths))
    broken = torch.nested.as_nested_tensor(rows, layout=torch.jagged)
    broken._ragged_idx = 2  # what verl's maybe_fix_3d_position_ids does to it
    data = TensorDict({"position_ids": broken, "input_ids": input_ids}, batch_size=[3])
    repair_position_ids(data)
    assert data["position_ids"].offsets().tolist() == [0, 6, 12, 18]
    assert all(torch.equal(a, b) for a, b in zip(data["position_ids"].unbind(), rows))

    good_rows = _rows([6, 5])
    good = jagged_position_ids(good_rows, _offsets([6, 5]))
    ids = torch.nested.nested_tensor_from_jagged(torch.arange(11), _offsets([6, 5]))
    data = TensorDict({"position_ids": good, "input_ids": ids}, batch_size=[2])
    repair_position_ids(data)
    assert data["position_ids"] is good
