"""Index an ImageFolder-style dataset (`<class root>/<class folder>/<image>`), used by UCM, AID, WHU-RS19,
PatternNet and NWPU-RESISC45.

The class root is found by content, not by name (WHU-RS19's top folder differs between copies): it is the folder whose
sub-folders match the most class names. Folder names map to the table's canonical names exactly, or after case and
separator folding (reported as a note); labels always come from the folder, never from the file name.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import PurePosixPath

from data_prep.pipeline import DatasetIndex, Item
from data_prep.report import DataPrepError, Report
from data_prep.source import Source, is_image_name, read_ref

RS_SUBJECT = "an overhead (aerial or satellite) image of a scene"


def fold(name: str) -> str:
    """Case- and separator-insensitive key: 'Railway_Station' and 'railwayStation' -> 'railwaystation'."""
    return re.sub(r"[\s_\-]+", "", name).lower()


def find_class_root(source: Source, class_names: Sequence[str]) -> str:
    """The folder (relative, "" = the root) holding the most images in sub-folders named like classes."""
    keys = {fold(c) for c in class_names}
    votes: Counter[str] = Counter()
    for member in source.members:
        parts = PurePosixPath(member).parts
        if len(parts) >= 2 and is_image_name(member) and fold(parts[-2]) in keys:
            votes["/".join(parts[:-2])] += 1
    if not votes:
        raise DataPrepError(
            f"no class folders found under {source.root} (expected sub-folders named like {list(class_names[:3])}...)."
            + source.rar_hint()
        )
    best = max(votes.values())
    return min((root for root, n in votes.items() if n == best), key=lambda r: (r.count("/"), r))


def index_class_folders(source: Source, class_names: Sequence[str], report: Report) -> list[Item]:
    """Items (label from the folder) of every image under the class root, sorted by path; problems go to `report`.

    Index = position in the sorted list of all images found, before any skip (stable across runs).
    """
    root = find_class_root(source, class_names)
    prefix = f"{root}/" if root else ""
    by_fold = {fold(c): i for i, c in enumerate(class_names)}
    exact = {c: i for i, c in enumerate(class_names)}
    folder_images: dict[str, list[str]] = defaultdict(list)
    for member in source.members:
        if not member.startswith(prefix):
            continue
        rel = member[len(prefix) :]
        parts = PurePosixPath(rel).parts
        if not is_image_name(member):
            report.ignore(member)
        elif len(parts) != 2:
            report.issue("file_outside_class_folder", member)
        else:
            folder_images[parts[0]].append(member)
    for d in sorted(source.dirs):
        if d.startswith(prefix) and "/" not in d[len(prefix) :] and d != root:
            folder_images.setdefault(d[len(prefix) :], [])
    items: list[Item] = []
    seen_classes: set[int] = set()
    for folder in sorted(folder_images):
        images = folder_images[folder]
        label = exact.get(folder, by_fold.get(fold(folder)))
        if label is None:
            report.issue("unknown_class_folder", prefix + folder, f"{len(images)} image(s)", count=len(images))
            continue
        if folder != class_names[label]:
            report.note(f"folder {folder!r} read as class {class_names[label]!r}")
        if label in seen_classes:
            report.issue("conflicting_labels", prefix + folder, f"second folder for class {class_names[label]!r}")
            continue
        seen_classes.add(label)
        if not images:
            report.issue("empty_class_folder", prefix + folder)
        for member in images:
            items.append(Item(0, "", (label,), member, member, source.files[member]))
    for label, name in enumerate(class_names):
        if label not in seen_classes:
            report.issue("missing_class_folder", prefix + name)
    items.sort(key=lambda it: it.source_path)
    for i, item in enumerate(items):
        item.index = i
    return items


def read_split_files(source: Source, file_names: dict[str, str], report: Report) -> dict[str, str] | None:
    """{image basename: split} from torchgeo/VTAB split files (one basename per line), or None if absent.

    `file_names` maps split -> file name (e.g. {"train": "uc_merced-train.txt", ...}); all three must be present.
    """
    found = {split: source.find(name) for split, name in file_names.items()}
    if not any(found.values()):
        return None
    missing = [file_names[s] for s, f in found.items() if not f]
    if missing:
        raise DataPrepError(f"split files incomplete: {missing} not found under {source.root} (need all three)")
    mapping: dict[str, str] = {}
    for split, members in found.items():
        text = read_ref(source.files[members[0]]).decode("utf-8-sig")
        for line in text.splitlines():
            name = line.strip()
            if not name:
                continue
            if name in mapping and mapping[name] != split:
                raise DataPrepError(f"{name} is in two split files ({mapping[name]}, {split})")
            mapping[name] = split
    return mapping


def apply_split_files(items: list[Item], mapping: dict[str, str], report: Report) -> list[Item]:
    """Set each item's split from `mapping` (by basename); items not named are reported and dropped."""
    kept = []
    names = set()
    for item in items:
        base = PurePosixPath(item.source_path).name
        names.add(base)
        split = mapping.get(base)
        if split is None:
            report.issue("not_in_split_files", item.source_path)
            continue
        item.split = split
        kept.append(item)
    for name in sorted(set(mapping) - names):
        report.issue("listed_image_missing", name, f"named in the {mapping[name]} split file")
    return kept


def build_folder_index(
    data_source: str,
    class_names: Sequence[str],
    root: str,
    archives: tuple[str, ...],
    report: Report,
    split_files: dict[str, str] | None = None,
) -> DatasetIndex:
    """The `DatasetIndex` of a remote-sensing ImageFolder dataset (folder or official zip at `root`).

    With `split_files` (split -> file name) found anywhere under `root`, those splits are used; otherwise the
    pipeline draws a seeded stratified split.
    """
    source = Source(root, archives)
    items = index_class_folders(source, class_names, report)
    split_source = ""
    if split_files:
        mapping = read_split_files(source, split_files, report)
        if mapping is not None:
            items = apply_split_files(items, mapping, report)
            split_source = "split files " + ", ".join(split_files.values())
    return DatasetIndex(
        data_source=data_source,
        domain="remote_sensing",
        subject=RS_SUBJECT,
        class_names=list(class_names),
        items=items,
        split_source=split_source,
        info={"root": str(source.root)},
    )
