"""Question text for the classification prompt, plain or with domain knowledge injected (the paper's Table 1 baseline).

The row's prompt is `"<image>" + question`. Both variants list the dataset's whole answer vocabulary (one class per
line, exactly as the reward expects it) and ask for `<think>...</think><answer>...</answer>`; the injection variant adds
one "Domain knowledge" paragraph stating the dataset's invariances (data_prep.whitelist).
"""

from __future__ import annotations

from collections.abc import Sequence

from data_prep.schema import MULTI_LABEL_SEPARATOR, NO_FINDING, PROMPT_VARIANTS
from data_prep.whitelist import invariance

FORMAT_INSTRUCTION = (
    "First think about the question step by step inside <think> </think> tags, then give the final answer inside "
    "<answer> </answer> tags, i.e. <think>...</think><answer>...</answer>."
)


def class_list_text(class_names: Sequence[str]) -> str:
    """The answer vocabulary, one `- name` line per class in canonical order (names may contain commas)."""
    return "\n".join(f"- {name}" for name in class_names)


def answer_instruction(multi_label: bool) -> str:
    """What the text inside <answer></answer> must be."""
    if multi_label:
        return (
            f"The answer lists every finding present, written exactly as in the list and separated by "
            f"'{MULTI_LABEL_SEPARATOR.strip()} ', or is '{NO_FINDING}' when none is present."
        )
    return "The answer is exactly one category name, written exactly as in the list."


def build_question(
    *,
    dataset: str,
    subject: str,
    class_names: Sequence[str],
    multi_label: bool = False,
    variant: str = "plain",
    task_note: str = "",
) -> str:
    """The question text that follows the `<image>` placeholder.

    Args:
        dataset: the dataset id (selects the injected knowledge, e.g. "ucm", "medmnist/organamnist").
        subject: what the image shows, e.g. "an aerial scene" or "an axial abdominal CT slice".
        class_names: the whole answer vocabulary in canonical order.
        multi_label: ask for all positive findings (ChestMNIST).
        variant: "plain" or "injection" (domain knowledge written into the prompt).
        task_note: an optional dataset-specific sentence (e.g. RetinaMNIST's ordinal grade scale).
    """
    if variant not in PROMPT_VARIANTS:
        raise ValueError(f"prompt variant must be one of {PROMPT_VARIANTS}, got {variant!r}")
    if multi_label:
        ask = f"This image is {subject}. Which of the following findings are present?"
    else:
        ask = f"This image is {subject}. Which of the following categories does it belong to?"
    parts = [ask]
    if task_note:
        parts.append(task_note)
    if variant == "injection":
        parts.append("Domain knowledge: " + invariance(dataset).knowledge)
    parts.append(class_list_text(class_names))
    parts.append(answer_instruction(multi_label) + " " + FORMAT_INSTRUCTION)
    return "\n".join(parts)
