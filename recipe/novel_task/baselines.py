"""The image-blind baseline of the jigsaw task: the best constant answer, scored by the real reward.

A model that ignores the image can still answer the same permutation for every puzzle. Its score is not 0: on 2 × 2
puzzles (23 non-identity permutations, 39 % of them their own inverse) a constant answer already places some tiles
right. Two constants are scored, and the better one (by mean reward) is the baseline:

* the most frequent ground-truth answer (it maximises `exact`: a constant is exact only where it IS the truth);
* the permutation that maximises the mean hit rate: hit(c) = (1/n²) Σ_k freq_k(c_k), a linear assignment of answer
  values to positions over the position-value frequency table (`scipy.optimize.linear_sum_assignment`).

Both are scored with `verl_ext.jigsaw.compute_score` (the test reward, paper weights) on a well-formed response
`<think></think><answer>{grid}</answer>`, so exact, hit and reward are computed, never hard-coded. The constant is
chosen on the rows it is scored on: an upper bound of what a fixed answer gets on them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from verl_ext.jigsaw import answer_text, compute_score, max_score, parse_ground_truth


def _score(answer: Sequence[int], grid: int, truths: Sequence[str]) -> dict[str, Any]:
    response = f"<think></think><answer>{answer_text(answer, grid)}</answer>"
    parts = [compute_score("", response, t) for t in truths]
    n = len(parts)
    return {
        "answer": answer_text(answer, grid),
        "n": n,
        "exact": sum(p["acc"] for p in parts) / n,
        "hit": sum(p["hit"] for p in parts) / n,
        "reward": sum(p["score"] for p in parts) / n,
        "reward_max": max_score(),
    }


def constant_answer_baseline(ground_truths: Sequence[str]) -> dict[str, Any] | None:
    """The better of the two constants (module docstring) on these rows; None for no rows.

    Args:
        ground_truths: `[N]` canonical answers (`reward_model.ground_truth`, the evaluation records' `label`).

    Returns:
        {"answer", "n", "exact", "hit", "reward", "reward_max", "rule"}.

    Raises:
        ValueError: ground truths of different grid sizes (give each size as its own task).
    """
    if not ground_truths:
        return None
    parsed = [parse_ground_truth(t) for t in ground_truths]
    grids = {g for g, _ in parsed}
    if len(grids) != 1:
        raise ValueError(f"ground truths mix grid sizes {sorted(grids)}; evaluate each size as its own task")
    grid = grids.pop()
    answers = np.array([a for _, a in parsed])  # [N, n²] values 1..n²
    mode = list(Counter(map(tuple, answers.tolist())).most_common(1)[0][0])
    from scipy.optimize import linear_sum_assignment

    tiles = grid * grid
    freq = np.stack([(answers == v).sum(0) for v in range(1, tiles + 1)], axis=1)  # [position, value]
    rows, cols = linear_sum_assignment(-freq)
    by_hit = [int(cols[r]) + 1 for r in np.argsort(rows)]
    candidates = [(_score(mode, grid, ground_truths), "most frequent answer")]
    candidates.append((_score(by_hit, grid, ground_truths), "hit-maximising permutation"))
    best, rule = max(candidates, key=lambda c: c[0]["reward"])
    return {**best, "rule": rule}
