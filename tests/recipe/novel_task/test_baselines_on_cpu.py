"""The image-blind constant-answer baseline of the jigsaw task, on hand-computed ground truths."""

from __future__ import annotations

import pytest

from recipe.novel_task.baselines import constant_answer_baseline


def test_constant_answer_hand_case():
    a, b, c = "2 1\n4 3", "2 1\n3 4", "1 2\n4 3"
    out = constant_answer_baseline([a, a, b, c])
    # constant a: exact 2/4; hit: a 1, a 1, b (positions 1, 2 right) 0.5, c (positions 3, 4) 0.5 -> 3/4;
    # format 1 (a well-formed response) -> reward 0.75 + 0.5 + 1 = 2.25 of 3
    assert out["answer"] == a and out["exact"] == 0.5 and out["hit"] == 0.75
    assert out["reward"] == pytest.approx(2.25) and out["reward_max"] == 3.0 and out["n"] == 4


def test_hit_maximising_constant_beats_the_mode_when_the_mode_is_rare():
    # four distinct 2x2 truths: every mode candidate is exact on 1 of 4; the assignment maximises hit
    truths = ["2 1\n4 3", "2 1\n3 4", "1 2\n4 3", "3 4\n1 2"]
    out = constant_answer_baseline(truths)
    assert out["exact"] == 0.25 and out["hit"] >= 0.5  # at least as good as "2 1\n4 3": hit (1+.5+.5+0)/4 = 0.5
    assert constant_answer_baseline([]) is None
    with pytest.raises(ValueError, match="grid sizes"):
        constant_answer_baseline(["2 1\n4 3", "2 1 3\n4 5 6\n7 8 9"])
