"""Rule rewards for classification answers, as verl 0.9.1 custom reward functions.

Paper: Domain-Aware GRPO (arXiv 2601.16419) reuses Visual-RFT's reward, r = accuracy + format. Visual-RFT's accuracy
(the answer and the label are substrings of each other after lower-casing and removing spaces/underscores) also pays
an empty answer and "A or B or C"; here the answer must name exactly ONE class of the row's vocabulary (after
stripping the punctuation and quotes around it: "Forest." and '"forest"' name forest).

Use in verl (the reward loop calls ``compute_score(data_source=, solution_str=, ground_truth=, extra_info=, ...)``)::

    reward.custom_reward_function.path=verl_ext/rewards.py
    reward.custom_reward_function.name=compute_score
    +reward.custom_reward_function.reward_kwargs.acc_weight=1.0
    +reward.custom_reward_function.reward_kwargs.format_weight=1.0
    +reward.custom_reward_function.reward_kwargs.multi_label_metric=set_match   # or jaccard

Every key of the returned dict is logged by verl (it takes the keys of the first sample for the whole batch, so the
keys are the same for every row). Pure module: no verl import, regex parsing only, never eval of model output.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
NO_FINDING = "no finding"
MULTI_LABEL_SEPARATORS = re.compile(r"[;,]")
MULTI_LABEL_METRICS = ("set_match", "jaccard")

_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
# Whole response: <think>..</think> then <answer>..</answer>, only whitespace around and between (Visual-RFT's shape).
_FORMAT_RE = re.compile(r"\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*", re.DOTALL)
_IGNORED_CHARS = re.compile(r"[\s_\-]+")


def _is_surrounding(char: str) -> bool:
    """Whitespace, any Unicode punctuation (category P*: quotes, brackets, ``.,;:!?*``, full-width 。) or a backtick."""
    return char.isspace() or char == "`" or unicodedata.category(char).startswith("P")


def strip_surrounding(text: str) -> str:
    """`text` without the punctuation, quotes and whitespace before its first and after its last other character.

    Args:
        text: any string, e.g. ``'"Forest."'`` -> ``'Forest'``, ``'**beach**'`` -> ``'beach'``.

    Note:
        Only the two ends are stripped, never inner characters: ``'"beach" or "forest"'`` keeps its inner quotes and
        still names two classes. Class names go through the same stripping, so BloodMNIST's
        "immature granulocytes(...)" (ending in ")") matches itself with or without the closing bracket.
    """
    start, end = 0, len(text)
    while start < end and _is_surrounding(text[start]):
        start += 1
    while end > start and _is_surrounding(text[end - 1]):
        end -= 1
    return text[start:end]


def normalize(text: str) -> str:
    """Normalise a class name or an answer for comparison: surrounding punctuation/quotes stripped
    (`strip_surrounding`), case-folded, whitespace, '_' and '-' removed.

    Args:
        text: any string.

    Note:
        Inner punctuation is kept: some class names contain commas or parentheses (TissueMNIST "Collecting Duct,
        Connecting Tubule", BloodMNIST "immature granulocytes(...)"), so "b.e.a.c.h" does not match "beach", while
        "Beach." and '"beach"' (how instruction-tuned models end or quote answers) do.
    """
    return _IGNORED_CHARS.sub("", strip_surrounding(text).casefold())


def extract_answer(solution_str: str) -> str | None:
    """The text inside the response's single ``<answer>...</answer>`` block, stripped; None if there is not exactly one.

    Args:
        solution_str: the decoded response.

    Note:
        Two answer blocks (or stray extra opening/closing tags) give None: a policy must not hedge over blocks.
        Tags are case-sensitive, as in Visual-RFT.
    """
    if solution_str.count(ANSWER_OPEN) != 1 or solution_str.count(ANSWER_CLOSE) != 1:
        return None
    match = _ANSWER_RE.search(solution_str)
    return None if match is None else match.group(1).strip()


def format_reward(solution_str: str) -> float:
    """Visual-RFT's format reward: 1.0 if the whole response is ``<think>…</think>\\s*<answer>…</answer>``, else 0.0.

    Args:
        solution_str: the decoded response.

    Note:
        Stricter than Visual-RFT's ``re.search``: the whole response must have this shape (whitespace allowed around
        it) with exactly one of each tag, so text after ``</answer>`` or a second block scores 0.
    """
    if any(solution_str.count(tag) != 1 for tag in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)):
        return 0.0
    return 1.0 if _FORMAT_RE.fullmatch(solution_str) else 0.0


def _as_str_list(values: Iterable[Any] | None) -> list[str]:
    """Strings of a list-like (parquet gives numpy arrays for list columns); [] for None."""
    return [] if values is None else [str(v) for v in values]


def match_class(answer: str | None, class_names: Sequence[str]) -> str | None:
    """The one class of `class_names` that `answer` names after `normalize`, or None (no class, or several).

    Args:
        answer: the parsed answer text (None if unparsable).
        class_names: the row's answer vocabulary (canonical class names).
    """
    if answer is None:
        return None
    key = normalize(answer)
    if not key:
        return None
    hits = {name for name in class_names if normalize(name) == key}
    return next(iter(hits)) if len(hits) == 1 else None


def match_class_set(answer: str | None, class_names: Sequence[str]) -> frozenset[str] | None:
    """Parse a multi-label answer into a set of findings; ``frozenset()`` means "no finding"; None if invalid.

    Args:
        answer: the parsed answer text, findings separated by ';' or ',' (e.g. "effusion; mass" or "no finding").
        class_names: the row's findings (``NO_FINDING`` is always accepted, whether listed or not).

    Note:
        Every part that is not empty after `strip_surrounding` must match exactly one finding; an unknown part, an
        empty answer, or "no finding" together with a finding make the answer invalid. Repeated findings count once.
    """
    if answer is None:
        return None
    vocab = [name for name in class_names if normalize(name) != normalize(NO_FINDING)] + [NO_FINDING]
    parts = [part for part in MULTI_LABEL_SEPARATORS.split(answer) if strip_surrounding(part)]
    matched = [match_class(part, vocab) for part in parts]
    if not matched or any(m is None for m in matched):
        return None
    if NO_FINDING in matched:
        return frozenset() if set(matched) == {NO_FINDING} else None
    return frozenset(matched)


def label_set(ground_truth: str) -> frozenset[str]:
    """The set of findings of a multi-label ground truth ("a; b" or "no finding" -> empty set), normalised."""
    parts = {normalize(p) for p in ground_truth.split(";") if p.strip()}
    return frozenset(parts - {normalize(NO_FINDING)})


def jaccard(pred: frozenset[str], true: frozenset[str]) -> float:
    """|pred ∩ true| / |pred ∪ true| on normalised names; two empty sets ("no finding" both) give 1.0."""
    pred_n, true_n = {normalize(p) for p in pred}, {normalize(t) for t in true}
    union = pred_n | true_n
    return 1.0 if not union else len(pred_n & true_n) / len(union)


def is_multi_label(data_source: str, extra_info: Mapping[str, Any] | None) -> bool:
    """Whether a row is multi-label: ``extra_info["multi_label"]``, else data_source "medmnist/chestmnist"."""
    if extra_info is not None and extra_info.get("multi_label") is not None:
        return bool(extra_info["multi_label"])
    return data_source == "medmnist/chestmnist"


def row_vocabulary(ground_truth: str, extra_info: Mapping[str, Any] | None) -> list[str]:
    """The row's answer vocabulary: ``extra_info["class_names"]``; without it, only the label itself.

    Note:
        Without a vocabulary the answer must equal the label after `normalize` (still no substring matching).
    """
    names = _as_str_list(extra_info.get("class_names")) if extra_info is not None else []
    return names or [ground_truth]


def accuracy_reward(
    answer: str | None,
    ground_truth: str,
    class_names: Sequence[str],
    multi_label: bool = False,
    multi_label_metric: str = "set_match",
) -> tuple[float, float]:
    """Accuracy of a parsed answer, and whether it was a valid answer at all.

    Args:
        answer: the text of the single ``<answer>`` block (None if unparsable).
        ground_truth: canonical class name; multi-label: findings joined by "; " or "no finding".
        class_names: the row's answer vocabulary.
        multi_label: score as a set of findings (ChestMNIST).
        multi_label_metric: "set_match" (1 for the exact set, else 0) or "jaccard" (|P∩T|/|P∪T|).

    Returns:
        (accuracy in [0, 1], valid in {0, 1}).
    """
    if multi_label:
        if multi_label_metric not in MULTI_LABEL_METRICS:
            raise ValueError(f"multi_label_metric must be one of {MULTI_LABEL_METRICS}, got {multi_label_metric!r}")
        pred = match_class_set(answer, class_names)
        if pred is None:
            return 0.0, 0.0
        truth = label_set(ground_truth)
        if multi_label_metric == "jaccard":
            return jaccard(pred, truth), 1.0
        return float({normalize(p) for p in pred} == set(truth)), 1.0
    pred_class = match_class(answer, class_names)
    if pred_class is None:
        return 0.0, 0.0
    return float(normalize(pred_class) == normalize(ground_truth)), 1.0


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: str,
    extra_info: Mapping[str, Any] | None = None,
    acc_weight: float = 1.0,
    format_weight: float = 1.0,
    multi_label_metric: str = "set_match",
    **kwargs: Any,
) -> dict[str, float]:
    """Visual-RFT's reward with a strict accuracy: score = acc_weight · acc + format_weight · format.

    Args:
        data_source: the row's data_source ("ucm", ..., "medmnist/<flag>").
        solution_str: the decoded response.
        ground_truth: ``reward_model["ground_truth"]``.
        extra_info: the row's extra_info (uses "class_names" and "multi_label").
        acc_weight: weight of the accuracy reward (Visual-RFT: 1).
        format_weight: weight of the format reward (Visual-RFT: 1).
        multi_label_metric: "set_match" or "jaccard" for multi-label rows.
        **kwargs: other keywords verl passes (e.g. reward_router_address); ignored.

    Returns:
        {"score", "acc", "format", "answer_valid"}; "answer_valid" = 1 if the answer named a vocabulary class (set).

    Note:
        Accuracy does not require the format: as in Visual-RFT the two parts are independent; only the single
        ``<answer>`` block is needed to read an answer.
    """
    multi_label = is_multi_label(data_source, extra_info)
    vocab = row_vocabulary(ground_truth, extra_info)
    acc, valid = accuracy_reward(extract_answer(solution_str), ground_truth, vocab, multi_label, multi_label_metric)
    fmt = format_reward(solution_str)
    return {"score": acc_weight * acc + format_weight * fmt, "acc": acc, "format": fmt, "answer_valid": valid}


def parse_prediction(solution_str: str, class_names: Sequence[str], multi_label: bool = False) -> str | None:
    """The canonical prediction of a response: the matched class name, or for multi-label the findings in vocabulary
    order joined by "; " ("no finding" if empty); None if the answer is missing or invalid.

    Args:
        solution_str: the decoded response.
        class_names: the row's vocabulary.
        multi_label: parse as a set of findings.
    """
    answer = extract_answer(solution_str)
    if not multi_label:
        return match_class(answer, class_names)
    found = match_class_set(answer, class_names)
    if found is None:
        return None
    ordered = [name for name in class_names if name in found]
    return "; ".join(ordered) if ordered else NO_FINDING


def oc_agreement(
    solution_original: str, solution_transformed: str, class_names: Sequence[str], multi_label: bool = False
) -> float:
    """Output-level constraint (OC) reward: 1.0 if the responses on x and on T(x) parse to the same valid answer.

    Paper baseline "OC" (arXiv 2601.16419, ablation Table 7): invariance enforced on the output instead of on the
    distribution. The answer on each view goes through `parse_prediction` (exactly one vocabulary class, or the
    same set of findings for multi-label rows); two invalid answers do NOT agree.

    Args:
        solution_original: the response on the original image.
        solution_transformed: the response on the transformed image (same prompt).
        class_names: the row's vocabulary.
        multi_label: compare sets of findings.
    """
    pred_a = parse_prediction(solution_original, class_names, multi_label)
    pred_b = parse_prediction(solution_transformed, class_names, multi_label)
    return float(pred_a is not None and pred_a == pred_b)
