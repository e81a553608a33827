"""Seeded splits and nested k-shot selection."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_prep.splits import (
    class_lists,
    first_per_class,
    parse_ratio,
    parse_shots,
    select_first_valid,
    stratified_split,
)


def test_parse_shots_and_ratio():
    assert parse_shots("8,1,2,4,2") == [1, 2, 4, 8]
    assert parse_shots("all,1") == [1, None]
    assert parse_ratio("0.6,0.2,0.2") == (0.6, 0.2, 0.2)
    for bad in ("0", "-1", ""):
        with pytest.raises(ValueError):
            parse_shots(bad)
    with pytest.raises(ValueError):
        parse_ratio("0.5,0.5,0.5")


def test_stratified_split_gives_torchgeo_sizes_and_is_seeded():
    labels = [c for c in range(21) for _ in range(100)]  # UCM: 21 x 100
    split = stratified_split(labels, 21, (0.6, 0.2, 0.2), seed=0)
    per = Counter((lab, s) for lab, s in zip(labels, split))
    assert all(per[(c, "train")] == 60 and per[(c, "val")] == 20 and per[(c, "test")] == 20 for c in range(21))
    assert Counter(split) == {"train": 1260, "val": 420, "test": 420}
    assert split == stratified_split(labels, 21, (0.6, 0.2, 0.2), seed=0)
    assert split != stratified_split(labels, 21, (0.6, 0.2, 0.2), seed=1)


def test_stratified_split_small_classes_use_cumulative_rounding():
    split = stratified_split([0, 0, 0], 1, (0.6, 0.2, 0.2), seed=0)  # 1.8 -> 2 train, 2.4 -> 2: 0 val, 1 test
    assert Counter(split) == {"train": 2, "test": 1}


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=12), min_size=1, max_size=6),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_k_shot_sets_are_nested_and_per_class(sizes, seed):
    labels = [(c,) for c, n in enumerate(sizes) for _ in range(n)]
    lists = class_lists(labels, len(sizes), seed, "train")
    previous: set[int] = set()
    for k in (1, 2, 4, 8):
        chosen = first_per_class(lists, k)
        flat = {p for members in chosen for p in members}
        assert previous <= flat
        for c, members in enumerate(chosen):
            assert len(members) == min(k, sizes[c])
            assert all(labels[p] == (c,) for p in members)
        previous = flat


def test_multi_label_lists_hold_every_positive_row():
    labels = [(0,), (0, 1), (1,), (2,)]
    lists = class_lists(labels, 3, seed=0, purpose="train")
    assert sorted(lists[0]) == [0, 1] and sorted(lists[1]) == [1, 2] and lists[2] == [3]


def test_select_first_valid_replaces_bad_items_and_checks_each_once():
    lists = [[5, 3, 1], [4, 2, 0]]
    calls = []

    def find_bad(positions):
        calls.append(list(positions))
        return {p for p in positions if p in (5, 2)}

    chosen, bad = select_first_valid(lists, 2, find_bad)
    assert chosen == [[3, 1], [4, 0]] and bad == {5, 2}
    assert calls == [[2, 3, 4, 5], [0, 1]]
