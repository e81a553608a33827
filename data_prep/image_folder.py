"""A user's own class-per-folder image set (`<root>/<class>/<image>`) -> the classification schema, without code.

    python -m data_prep folder --root ~/data/my_scenes --out data/my_scenes --name my_scenes \
        --subject "an aerial image of a scene" --domain remote_sensing --transforms identity,hflip

The classes are the sub-folders of the class root, sorted (hidden folders and `__MACOSX` left out); the class root is
`--root`, or the single folder inside it (a zip's top folder). Every check of the dataset converters applies: folders
whose names differ only by case or `_`/`-`/spaces are refused (both named), an empty class folder and an image outside
a class folder are a reason code (fail or skip), non-images are listed, every image is decoded, exact duplicates are
found, and the split is seeded and stratified. Nothing about the images is assumed: the prompt states `--subject`, and
the only transforms whitelisted are those given by `--transforms` (default `identity`: no augmentation is known to keep
your labels).
"""

from __future__ import annotations

import re
from collections import defaultdict

from data_prep.folders import fold, index_class_folders, report_bad_names
from data_prep.pipeline import DatasetIndex
from data_prep.report import DataPrepError, Report
from data_prep.schema import DOMAINS
from data_prep.source import Source
from data_prep.whitelist import ALL_AND_STAIN, known_datasets

NAME = "folder"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
TRANSFORMS = ALL_AND_STAIN  # the vocabulary of verl_ext/transforms.py that rows may carry


def parse_transforms(text: str) -> tuple[str, ...]:
    """'identity,hflip' -> ("identity", "hflip") in the vocabulary's order; `identity` is always added."""
    names = {t.strip() for t in text.split(",") if t.strip()}
    unknown = sorted(names - set(TRANSFORMS))
    if unknown:
        raise ValueError(f"unknown transform(s) {unknown}; choose from {list(TRANSFORMS)}")
    return tuple(t for t in TRANSFORMS if t in names or t == "identity")


def _visible(name: str) -> bool:
    return not name.startswith(".") and name != "__MACOSX"


def _class_root(source: Source) -> str:
    """`--root` itself, or the single visible folder inside it when `--root` holds nothing else (a zip's top)."""
    top = sorted(d for d in source.dirs if "/" not in d and _visible(d))
    loose = [m for m in source.members if "/" not in m and _visible(m)]
    if len(top) == 1 and not loose and any(d.startswith(top[0] + "/") for d in source.dirs):
        return top[0]
    return ""


def build_index(
    root: str,
    report: Report,
    name: str,
    subject: str = "an image",
    domain: str = "general",
    transforms: tuple[str, ...] = ("identity",),
) -> DatasetIndex:
    """Index the class folders under `root` (a folder or a .zip)."""
    if not _NAME_RE.match(name):
        raise DataPrepError(f"--name {name!r}: use lower-case letters, digits and '_', '-', '.' (e.g. my_scenes)")
    if name in known_datasets() or name.startswith("medmnist/"):
        raise DataPrepError(f"--name {name!r} is a built-in dataset: use `python -m data_prep {name}`, or another name")
    if domain not in DOMAINS:
        raise DataPrepError(f"--domain must be one of {DOMAINS}, got {domain!r}")
    if "identity" not in transforms or set(transforms) - set(TRANSFORMS):
        raise DataPrepError(f"--transforms {list(transforms)}: must hold identity and names from {list(TRANSFORMS)}")
    source = Source(root)
    class_root = _class_root(source)
    prefix = f"{class_root}/" if class_root else ""
    classes = sorted(
        d[len(prefix) :]
        for d in source.dirs
        if d.startswith(prefix) and "/" not in d[len(prefix) :] and d != class_root and _visible(d[len(prefix) :])
    )
    where = source.root / class_root if class_root else source.root
    if len(classes) < 2:
        raise DataPrepError(
            f"{where} holds {len(classes)} class folder(s) {classes}; a classification set needs one sub-folder per "
            "class (at least two), each holding that class's images"
        )
    by_fold: dict[str, list[str]] = defaultdict(list)
    for c in classes:
        by_fold[fold(c)].append(c)
    twins = [names for names in by_fold.values() if len(names) > 1]
    if twins:
        raise DataPrepError(
            f"two folders for one class under {where}: {' and '.join(twins[0])} (names differ only by case or "
            f"'_'/'-'/spaces); merge them into one folder"
            + (f" ({len(twins)} classes affected)" if len(twins) > 1 else "")
        )
    report_bad_names(source, report)
    items = index_class_folders(source, classes, report, class_root)
    if source.loops:
        report.note(f"symlinked folders read once (they lead to a folder already read): {source.loops[:5]}")
    return DatasetIndex(
        data_source=name,
        domain=domain,
        subject=subject,
        class_names=classes,
        items=items,
        split_source="",
        info={"root": str(source.root), "class_root": class_root, "class_folders": len(classes)},
        transforms=transforms,
    )
