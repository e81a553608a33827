"""CPU stand-in reward for the DPO loop tests: verl_ext.rewards.compute_score, except that a malformed response (what a
random-weight model writes) counts as well-formed and is "correct" by a coin flip on its text (crc32 parity), so the
tiny model's own samples form online pairs. Never used outside tests."""

from __future__ import annotations

import zlib
from typing import Any

from verl_ext.rewards import compute_score as real_score


def compute_score(data_source: str, solution_str: str, ground_truth: str, extra_info: Any = None, **kwargs: Any):
    score = real_score(data_source, solution_str, ground_truth, extra_info)
    if score["format"] == 0.0:
        coin = float(zlib.crc32(solution_str.encode("utf-8")) % 2)
        score = {"score": coin, "acc": coin, "format": 1.0, "answer_valid": 1.0}
    return score
