"""Splits and sample selection, all seeded and independent of worker count or file-system order.

- `stratified_split`: per class, a seeded permutation cut at the cumulative ratio boundaries (60/20/20 on 100 images
  gives exactly 60/20/20, the torchgeo/VTAB sizes), used when a dataset has no official split.
- `class_lists`: one seeded permutation of a pool; class c's list = the pool items with label c, in that order.
  The k-shot set = the first k of every class list (union for multi-label), so k-shot sets are nested by construction.
- `select_first_valid`: the same "first n per class" but skipping images found undecodable, validated lazily
  (only candidates are decoded), so a corrupt image is replaced by the next one and nesting still holds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

SPLITS = ("train", "val", "test")
# independent random streams per purpose, so changing --shots never changes the eval set
PURPOSE = {"split": 1, "train": 2, "val": 3, "test": 4}


def parse_ratio(text: str) -> tuple[float, float, float]:
    """'0.6,0.2,0.2' -> (0.6, 0.2, 0.2); the three must be >= 0 and sum to 1."""
    parts = [float(x) for x in text.split(",")]
    if len(parts) != 3 or min(parts) < 0 or not math.isclose(sum(parts), 1.0, abs_tol=1e-6):
        raise ValueError(f"split ratio must be three non-negative numbers summing to 1 (train,val,test), got {text!r}")
    return parts[0], parts[1], parts[2]


def parse_shots(text: str) -> list[int | None]:
    """'1,2,4,8' -> [1, 2, 4, 8]; 'all' -> None (the whole train split). Sorted, duplicates removed."""
    shots: set[int | None] = set()
    for part in text.split(","):
        part = part.strip().lower()
        if part == "all":
            shots.add(None)
        elif part:
            k = int(part) if part.lstrip("-").isdigit() else 0
            if k <= 0:
                raise ValueError(f"shots must be positive integers or 'all', got {part!r}")
            shots.add(k)
    if not shots:
        raise ValueError("--shots needs at least one value")
    return sorted(k for k in shots if k is not None) + ([None] if None in shots else [])


def _rng(seed: int, purpose: str, *extra: int) -> np.random.Generator:
    return np.random.default_rng([seed, PURPOSE[purpose], *extra])


def stratified_split(primary_labels: Sequence[int], n_classes: int, ratio: tuple[float, float, float], seed: int):
    """Assign "train"/"val"/"test" to every item, per class by a seeded permutation and cumulative rounding.

    Returns a list of split names aligned with `primary_labels`.
    """
    out = [""] * len(primary_labels)
    by_class: list[list[int]] = [[] for _ in range(n_classes)]
    for pos, label in enumerate(primary_labels):
        by_class[label].append(pos)
    for c, members in enumerate(by_class):
        n = len(members)
        order = _rng(seed, "split", c).permutation(n)
        b1 = math.floor(n * ratio[0] + 0.5)
        b2 = max(b1, math.floor(n * (ratio[0] + ratio[1]) + 0.5))
        for rank, j in enumerate(order):
            out[members[j]] = "train" if rank < b1 else ("val" if rank < b2 else "test")
    return out


def class_lists(labels: Sequence[Sequence[int]], n_classes: int, seed: int, purpose: str) -> list[list[int]]:
    """Per class, the pool positions holding that label, in one seeded permutation order of the pool."""
    order = _rng(seed, purpose).permutation(len(labels))
    lists: list[list[int]] = [[] for _ in range(n_classes)]
    for pos in order:
        for c in sorted(set(labels[pos])):
            lists[c].append(int(pos))
    return lists


def first_per_class(lists: Sequence[Sequence[int]], n: int, bad: set[int] = frozenset()) -> list[list[int]]:
    """The first `n` positions of every class list that are not in `bad`."""
    chosen = []
    for members in lists:
        good = [p for p in members if p not in bad]
        chosen.append(good[:n])
    return chosen


def select_first_valid(
    lists: Sequence[Sequence[int]], n: int, find_bad: Callable[[list[int]], set[int]]
) -> tuple[list[list[int]], set[int]]:
    """`first_per_class` that skips positions `find_bad` reports as unusable; checks each position at most once.

    Returns (chosen lists, all bad positions found).
    """
    bad: set[int] = set()
    checked: set[int] = set()
    while True:
        chosen = first_per_class(lists, n, bad)
        new = sorted({p for members in chosen for p in members} - checked)
        if not new:
            return chosen, bad
        checked.update(new)
        bad |= find_bad(new)


def union_sorted(chosen: Sequence[Sequence[int]]) -> list[int]:
    """All positions of the per-class lists, once each, ascending."""
    return sorted({p for members in chosen for p in members})
