"""Grounding (RefCOCO-style) as a prior task of the forgetting harness: parse a box, score it by IoU.

Rows come from `python -m data_prep grounding` (`data_source` = `grounding_<name>`, ground truth "[x1, y1, x2, y2]"
in the pixel frame the model sees). A response's box is the four numbers inside its `<answer>` block ("[x1, y1, x2,
y2]", "(x1,y1),(x2,y2)" or Qwen2.5-VL's `{"bbox_2d": [...]}`); anything else (fewer or more numbers, x2 <= x1,
y2 <= y1) is no box and scores IoU 0. Metrics: `accuracy` = share of rows with IoU >= 0.5 (RefCOCO's Acc@0.5, the
number the paper's −57.2 is on), `mean_iou`, `valid_rate` (a box was parsed). The forgetting comparison is paired by
row with the harness's bootstrap, like the other tasks.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from verl_ext.rewards import extract_answer
from verl_ext.stats import separation

PREFIX = "grounding_"
IOU_HIT = 0.5
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_ALLOWED = re.compile(r"[\d\s.,;:\-\[\](){}\"'xy_]*")  # numbers, brackets, separators and the bbox_2d / x1 keys


def parse_box(text: str | None) -> tuple[float, float, float, float] | None:
    """(x1, y1, x2, y2) from an answer text holding exactly four numbers with x2 > x1 and y2 > y1; else None.

    Args:
        text: the text inside `<answer>` (None when there is none).
    """
    if text is None:
        return None
    text = text.replace("bbox_2d", "").replace("x1", "").replace("y1", "").replace("x2", "").replace("y2", "")
    if not _ALLOWED.fullmatch(text.replace("bbox", "")):
        return None
    numbers = [float(v) for v in _NUMBER.findall(text)]
    if len(numbers) != 4:
        return None
    x1, y1, x2, y2 = numbers
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes (continuous coordinates; 0 for disjoint boxes)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def score_response(response: str, ground_truth: str) -> dict[str, float]:
    """{"iou", "hit" (IoU >= 0.5), "answer_valid"} of one response against the row's "[x1, y1, x2, y2]"."""
    truth = parse_box(ground_truth)
    if truth is None:
        raise ValueError(f"grounding ground truth {ground_truth!r} is not [x1, y1, x2, y2]")
    box = parse_box(extract_answer(response))
    iou = box_iou(box, truth) if box is not None else 0.0
    return {"iou": iou, "hit": float(iou >= IOU_HIT), "answer_valid": float(box is not None)}


def evaluate_grounding(
    rows: Sequence[Any], backend: Any, batch_size: int, progress: Callable[[int], None] | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Greedy answers to grounding rows scored by IoU: (metrics, per-row records)."""
    from verl_ext.evaluation.backends import generate_in_batches

    responses = generate_in_batches(rows, backend, batch_size, progress)
    records = [
        {"index": r.index, "label": r.label, "response": text, **score_response(text, r.label)}
        for r, text in zip(rows, responses)
    ]
    n = len(records)

    def mean(key: str) -> float:
        return sum(rec[key] for rec in records) / n if n else float("nan")

    metrics = {"kind": "grounding", "n": n, "accuracy": mean("hit"), "mean_iou": mean("iou")}
    return metrics | {"valid_rate": mean("answer_valid")}, records


def compare_grounding(
    pairs: Sequence[tuple[Mapping, Mapping]],
    paired_bootstrap: Callable[..., dict[str, float]],
    seed: int = 0,
    n_boot: int = 2000,
) -> dict[str, Any]:
    """Base vs trained records of the same rows: Δ Acc@0.5 (`accuracy`), Δ valid rate, Δ mean IoU, paired CIs.

    `paired_bootstrap(base, trained, n_boot, seed)` is the harness's paired interval (`forgetting.paired_bootstrap`,
    passed in: this module is imported by `tasks`, which `forgetting` imports).
    """

    def delta(key: str) -> dict[str, float]:
        return paired_bootstrap([b[key] for b, _ in pairs], [t[key] for _, t in pairs], n_boot, seed)

    out = {"kind": "grounding", "n": len(pairs), "accuracy": delta("hit"), "valid_rate": delta("answer_valid")}
    out["iou"] = delta("iou")
    acc = out["accuracy"]
    side = separation(acc["ci_low"], acc["ci_high"])
    out["reading"] = {1: "improved", -1: "fell", 0: "no significant change"}[side]
    return out
