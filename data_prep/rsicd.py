"""RSICD used for classification: images + the official class lists + the official caption split.

Expected under --root (folders or the official archives, any depth):
- `RSICD_images/` (or `RSICD_images.zip`): 10,921 flat 224x224 JPEGs;
- `txtclasses_rsicd/<Class>.txt`: one image name per line (CRLF), 31 lists = AID's 30 classes + `playfields`
  (the official `txtclasses_rsicd.rar` must be extracted first);
- `dataset_rsicd.json` (optional): Karpathy-format `images[].filename/split` -> official train/val/test
  ("restval", if present, counts as train); without it a seeded stratified split is drawn.

Label = the class list naming the image; fallback = the AID class in an `<aidclass>_<N>.jpg` name (counted in the
notes); an image with neither (e.g. a numeric `00123.jpg` in no list) is `unlabeled` (skip or fail).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import PurePosixPath

from data_prep.aid import CLASS_NAMES as AID_CLASSES
from data_prep.folders import RS_SUBJECT, fold, report_bad_names
from data_prep.pipeline import DatasetIndex, Item
from data_prep.report import DataPrepError, Report
from data_prep.source import Source, is_image_name, is_mac_metadata, read_text

NAME = "rsicd"
ARCHIVES = ("RSICD_images.zip", "txtclasses_rsicd.zip")
CLASS_NAMES = (*AID_CLASSES, "playfields")  # case-sensitive sort of the 31 txt names = AID order + playfields
JSON_NAME = "dataset_rsicd.json"
_NAME_RE = re.compile(r"([a-z]+)_\d+\.jpg$")
_SPLIT_NAMES = {"train": "train", "restval": "train", "val": "val", "test": "test"}


def _image_dir(source: Source) -> str:
    """The folder holding the most images (RSICD_images/ in the official layout)."""
    counts = Counter(str(PurePosixPath(m).parent) for m in source.members if is_image_name(m))
    if not counts:
        raise DataPrepError(f"no RSICD images found under {source.root}")
    return max(sorted(counts), key=lambda d: counts[d])


def read_class_lists(source: Source, report: Report) -> dict[str, int]:
    """{image name: class id} from `txtclasses_rsicd/*.txt`; conflicting or unknown lists go to `report`."""
    by_fold = {fold(c): i for i, c in enumerate(CLASS_NAMES)}
    lists = [m for m in source.members if m.lower().endswith(".txt") and fold(PurePosixPath(m).stem) in by_fold]
    if not lists:
        where = f"no RSICD class lists (txtclasses_rsicd/<Class>.txt) under {source.root}."
        raise DataPrepError(where + source.rar_hint())
    folder = Counter(str(PurePosixPath(m).parent) for m in lists).most_common(1)[0][0]
    labels: dict[str, int] = {}
    for member in sorted(m for m in source.members if str(PurePosixPath(m).parent) == folder):
        stem = PurePosixPath(member).stem
        if not member.lower().endswith(".txt") or is_mac_metadata(member):
            report.ignore(member)
            continue
        label = by_fold.get(fold(stem))
        if label is None:
            report.issue("unknown_class_list", member)
            continue
        for line in read_text(source, member, "class list").splitlines():
            name = line.strip()
            if not name:
                continue
            if name in labels and labels[name] != label:
                report.issue("conflicting_labels", name, f"{CLASS_NAMES[labels[name]]} and {CLASS_NAMES[label]}")
                labels[name] = -1
            elif name not in labels:
                labels[name] = label
    return labels


def read_official_split(source: Source) -> dict[str, str] | None:
    """{filename: split} from dataset_rsicd.json, or None when the file is absent."""
    found = source.find(JSON_NAME)
    if not found:
        return None
    where = f"{source.root}/{found[0]}"
    fix = "replace it with the official file, or rerun with --no-split-files for a seeded split"
    try:
        data = json.loads(read_text(source, found[0], "RSICD split file"))
    except ValueError as exc:  # JSONDecodeError: truncated, empty, not JSON
        raise DataPrepError(f"{where} is not valid JSON ({exc}); {fix}") from exc
    entries = data.get("images") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise DataPrepError(f"{where} has no 'images' list (Karpathy format: {{\"images\": [...]}}); {fix}")
    out = {}
    for pos, entry in enumerate(entries):
        name = entry.get("filename") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name:
            raise DataPrepError(f"{where}: images[{pos}] has no 'filename'; {fix}")
        split = _SPLIT_NAMES.get(entry.get("split", ""))
        if split is None:
            raise DataPrepError(f"{where}: unknown split {entry.get('split')!r} for {name} in images[{pos}]; {fix}")
        out[name] = split
    return out


def label_from_name(name: str) -> int | None:
    """The AID class in an `<aidclass_lower>_<N>.jpg` name, or None."""
    m = _NAME_RE.match(name)
    if not m:
        return None
    return {fold(c): i for i, c in enumerate(AID_CLASSES)}.get(m.group(1))


def build_index(root: str, report: Report, use_split_files: bool = True) -> DatasetIndex:
    """Index RSICD at `root`; see the module docstring for the expected files."""
    source = Source(root, ARCHIVES)
    report_bad_names(source, report)
    labels = read_class_lists(source, report)
    split_of = read_official_split(source) if use_split_files else None
    image_dir = _image_dir(source)
    members = [m for m in source.members if str(PurePosixPath(m).parent) == image_dir and is_image_name(m)]
    items, seen, from_name = [], set(), 0
    for i, member in enumerate(members):
        name = PurePosixPath(member).name
        seen.add(name)
        label = labels.get(name)
        if label is None:
            label = label_from_name(name)
            if label is None:
                report.issue("unlabeled", member)
                continue
            from_name += 1
        if label < 0:  # conflicting lists, already reported
            continue
        split = ""
        if split_of is not None:
            split = split_of.get(name, "")
            if not split:
                report.issue("not_in_split_files", member, f"not in {JSON_NAME}")
                continue
        items.append(Item(i, split, (label,), member, member, source.files[member]))
    for name in sorted(set(labels) - seen):
        report.issue("listed_image_missing", name, "named in a class list")
    if from_name:
        report.note(f"{from_name} image(s) in no class list labelled from their file name (<aidclass>_<N>.jpg)")
    split_source = f"official ({JSON_NAME})" if split_of is not None else ""
    info = {"root": str(source.root)}
    return DatasetIndex(NAME, "remote_sensing", RS_SUBJECT, list(CLASS_NAMES), items, split_source, info=info)
