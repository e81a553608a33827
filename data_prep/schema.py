"""The parquet row schema that verl's `RLHFDataset` reads unchanged (the layout of upstream's geo3k example).

One row = one image and one question:

- data_source: "ucm" | "aid" | "rsicd" | "whu_rs19" | "patternnet" | "resisc45" | "medmnist/<flag>" | "s2_tiles"
- prompt: [{"role": "user", "content": "<image>" + question}] (a literal `<image>` placeholder)
- images: [{"bytes": PNG or JPEG bytes, "path": relative source path or None}]
- ability: "remote_sensing_scene_classification" | "medical_image_classification"
- reward_model: {"style": "rule", "ground_truth": canonical class name; multi-label: positives joined by "; "}
- extra_info: split, index, dataset, domain, label_id, label_ids, class_names, multi_label, transforms,
  prompt_variant, source_path
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

COLUMNS = ("data_source", "prompt", "images", "ability", "reward_model", "extra_info")
DOMAINS = ("remote_sensing", "medical", "general")
ABILITY = {"remote_sensing": "remote_sensing_scene_classification", "medical": "medical_image_classification"}
ABILITY["general"] = "visual_question_answering"  # easy-vqa, user multiple-choice sets (prior tasks of the novel study)
PROMPT_VARIANTS = ("plain", "injection")
NO_FINDING = "no finding"  # ChestMNIST's answer for an all-zero label row
MULTI_LABEL_SEPARATOR = "; "
IMAGE_PLACEHOLDER = "<image>"

EXTRA_INFO_TYPE = pa.struct(
    [
        ("split", pa.string()),
        ("index", pa.int64()),
        ("dataset", pa.string()),
        ("domain", pa.string()),
        ("label_id", pa.int64()),
        ("label_ids", pa.list_(pa.int64())),
        ("class_names", pa.list_(pa.string())),
        ("multi_label", pa.bool_()),
        ("transforms", pa.list_(pa.string())),
        ("prompt_variant", pa.string()),
        ("source_path", pa.string()),
    ]
)
ARROW_SCHEMA = pa.schema(
    [
        ("data_source", pa.string()),
        ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("images", pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))),
        ("ability", pa.string()),
        ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
        ("extra_info", EXTRA_INFO_TYPE),
    ]
)


def ground_truth_for(label_ids: Sequence[int], class_names: Sequence[str], multi_label: bool) -> str:
    """The reward's ground truth: the class name, or for multi-label the names in canonical order joined by "; "."""
    if not label_ids:
        raise ValueError("a row needs at least one label id (multi-label all-zero rows use the 'no finding' class)")
    if not multi_label:
        if len(label_ids) != 1:
            raise ValueError(f"single-label row with {len(label_ids)} labels: {list(label_ids)}")
        return class_names[label_ids[0]]
    return MULTI_LABEL_SEPARATOR.join(class_names[i] for i in sorted(set(label_ids)))


def make_row(
    *,
    data_source: str,
    question: str,
    image_bytes: bytes,
    image_path: str | None,
    domain: str,
    label_ids: Sequence[int],
    class_names: Sequence[str],
    multi_label: bool,
    transforms: Sequence[str],
    prompt_variant: str,
    split: str,
    index: int,
    source_path: str,
) -> dict[str, Any]:
    """Build one parquet row (a plain dict matching `ARROW_SCHEMA`).

    Args:
        data_source: the dataset id, also written to `extra_info["dataset"]`.
        question: the prompt text after the `<image>` placeholder (see data_prep.prompts).
        image_bytes: the encoded PNG or JPEG.
        image_path: the image's relative source path, or None when it came from an array (MedMNIST).
        domain: "remote_sensing" or "medical".
        label_ids: class indices into `class_names` (one for single-label).
        class_names: the whole answer vocabulary in canonical order.
        multi_label: True for ChestMNIST (label_id is then -1).
        transforms: the dataset's whitelist (data_prep.whitelist.allowed_transforms).
        prompt_variant: "plain" or "injection".
        split: "train" | "val" | "test" (the split the image belongs to).
        index: the image's stable index in its dataset (MedMNIST: its row in the split's array).
        source_path: where the image came from (relative path, or "<file>.npz:<key>[<row>]").
    """
    if domain not in ABILITY:
        raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
    if prompt_variant not in PROMPT_VARIANTS:
        raise ValueError(f"prompt_variant must be one of {PROMPT_VARIANTS}, got {prompt_variant!r}")
    if not 0 <= min(label_ids) <= max(label_ids) < len(class_names):
        raise ValueError(f"label ids {list(label_ids)} out of range for {len(class_names)} classes")
    ids = sorted(set(int(i) for i in label_ids))
    return {
        "data_source": data_source,
        "prompt": [{"role": "user", "content": IMAGE_PLACEHOLDER + question}],
        "images": [{"bytes": image_bytes, "path": image_path}],
        "ability": ABILITY[domain],
        "reward_model": {"style": "rule", "ground_truth": ground_truth_for(ids, class_names, multi_label)},
        "extra_info": {
            "split": split,
            "index": int(index),
            "dataset": data_source,
            "domain": domain,
            "label_id": -1 if multi_label else ids[0],
            "label_ids": ids,
            "class_names": list(class_names),
            "multi_label": multi_label,
            "transforms": list(transforms),
            "prompt_variant": prompt_variant,
            "source_path": source_path,
        },
    }
