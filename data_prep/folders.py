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

from data_prep.class_tables import CLASS_TABLES
from data_prep.pipeline import DatasetIndex, Item
from data_prep.report import DataPrepError, Report
from data_prep.source import Source, base_name, is_image_name, read_text

RS_SUBJECT = "an overhead (aerial or satellite) image of a scene"


def fold(name: str) -> str:
    """Case- and separator-insensitive key: 'Railway_Station' and 'railwayStation' -> 'railwaystation'."""
    return re.sub(r"[\s_\-]+", "", name).lower()


def _class_trees(source: Source, keys: set[str]) -> dict[str, Counter[str]]:
    """{folder: {sub-folder named like a class: images}} for every folder with class-named sub-folders."""
    trees: dict[str, Counter[str]] = defaultdict(Counter)
    for member in source.members:
        if not is_image_name(member):
            continue
        parts = member.split("/")
        if len(parts) >= 2 and fold(parts[-2]) in keys:
            trees["/".join(parts[:-2])][parts[-2]] += 1
    return trees


def find_class_root(source: Source, class_names: Sequence[str], dataset: str = "") -> str:
    """The folder (relative, "" = the root) whose sub-folders are the class folders.

    A tree = a folder with sub-folders named like at least two different classes. Exactly one tree: that folder.
    Several (e.g. --root holding UCM and NWPU-RESISC45, whose class names fold onto UCM's): refused, naming each, so a
    dataset is never read from another dataset's folders. No tree: the folder holding the most images in class-named
    sub-folders (a copy with a single class).
    """
    keys = {fold(c) for c in class_names}
    trees = _class_trees(source, keys)
    if not trees:
        raise DataPrepError(
            f"no class folders found under {source.root} (expected sub-folders named like {list(class_names[:3])}...)."
            + source.rar_hint()
        )
    matched = {root: {fold(f) for f in folders} for root, folders in trees.items()}
    strong = sorted(root for root, classes in matched.items() if len(classes) >= 2)
    if len(strong) > 1:
        found = ", ".join(
            f"'{root or '.'}' ({len(matched[root])} of {len(keys)} class names, {sum(trees[root].values())} images)"
            for root in strong
        )
        what = f"--root {source.root} holds several trees of folders named like {dataset or 'the'} classes: {found}; "
        nested = [(o, i) for o in strong for i in strong if i != o and (o == "" or i.startswith(o + "/"))]
        if nested:  # --root at the outer tree would find the inner one again: it has to move
            outer, inner = nested[0]
            raise DataPrepError(
                what + f"'{inner}' lies inside the tree '{outer or '.'}' (class-named folders inside a class folder: a "
                f"copy nested in the dataset?); move '{source.root / inner}' out of {source.root / outer} or delete "
                "it, then rerun"
            )
        if source.root.is_file():
            raise DataPrepError(what + "extract the archive and point --root at the folder of the one to convert")
        raise DataPrepError(
            what + "point --root at the one to convert: " + " or ".join(f"--root {source.root / r}" for r in strong)
        )
    if strong:
        return strong[0]
    best = max(sum(t.values()) for t in trees.values())
    return min((r for r, t in trees.items() if sum(t.values()) == best), key=lambda r: (r.count("/"), r))


def class_folder_names(source: Source, root: str) -> list[str]:
    """The sub-folders of the class root `root` that hold images directly, sorted."""
    prefix = f"{root}/" if root else ""
    names = set()
    for member in source.members:
        rel = member[len(prefix) :] if member.startswith(prefix) else None
        if rel is not None and rel.count("/") == 1 and is_image_name(member):
            names.add(rel.split("/", 1)[0])
    return sorted(names)


def check_dataset_matches(source: Source, root: str, dataset: str, class_names: Sequence[str]) -> None:
    """Refuse a class root whose folders are another dataset's (an NWPU-RESISC45 tree given to `ucm`: 18 of its 45
    folder names fold onto UCM classes) or mostly no class of `dataset`, naming the dataset it looks like.

    A folder counts for a dataset when its folded name is one of that dataset's classes. Refused when another known
    dataset names more of the folders than `dataset` does, or when fewer than half of them are `dataset`'s classes; a
    partial copy (some classes only) passes.
    """
    folders = class_folder_names(source, root)
    if not folders:
        return
    folded = {fold(f) for f in folders}

    def hits(names: Sequence[str]) -> int:
        return len(folded & {fold(c) for c in names})

    mine = hits(class_names)
    others = sorted(((hits(n), name) for name, n in CLASS_TABLES.items() if name != dataset), reverse=True)
    where = f"class root {source.root / root if root else source.root}"
    if others and others[0][0] > mine:
        score, like = others[0]
        raise DataPrepError(
            f"{where} looks like {like}, not {dataset}: {score} of its {len(folders)} class folders are {like} "
            f"classes, {mine} are {dataset} classes; run `python -m data_prep {like}` on it, or point --root at a "
            f"{dataset} copy"
        )
    if 2 * mine < len(folders):
        unknown = [f for f in folders if fold(f) not in {fold(c) for c in class_names}]
        raise DataPrepError(
            f"{where} does not look like {dataset}: only {mine} of its {len(folders)} class folders are {dataset} "
            f"classes (others: {unknown[:5]}); for your own class folders use `python -m data_prep folder`"
        )


def report_bad_names(source: Source, report: Report) -> None:
    """Count (or refuse) every file whose name is not valid UTF-8 (no parquet or JSON string can hold it)."""
    for path in source.bad_names:
        report.issue("undecodable_file_name", path, "rename it to a UTF-8 name")


def index_class_folders(source: Source, class_names: Sequence[str], report: Report, root: str) -> list[Item]:
    """Items (label from the folder) of every image under the class root `root`, sorted by path; problems go to
    `report`. Two folders that map to the same class (`Forest/` and `forest/`) are refused, naming both.

    Index = position in the sorted list of all images found, before any skip (stable across runs).
    """
    prefix = f"{root}/" if root else ""
    by_fold = {fold(c): i for i, c in enumerate(class_names)}
    exact = {c: i for i, c in enumerate(class_names)}
    folder_images: dict[str, list[str]] = defaultdict(list)
    outside = 0
    for member in source.members:
        if not member.startswith(prefix):
            outside += is_image_name(member)
            continue
        rel = member[len(prefix) :]
        if not is_image_name(member):
            report.ignore(member)
        elif rel.count("/") != 1:
            report.issue("file_outside_class_folder", member)
        else:
            folder_images[rel.split("/", 1)[0]].append(member)
    if outside:
        report.note(f"{outside} image(s) outside the class root {root or '.'!r} ignored")
    for d in sorted(source.dirs):
        if d.startswith(prefix) and "/" not in d[len(prefix) :] and d != root:
            folder_images.setdefault(d[len(prefix) :], [])
    folders_of: dict[int, list[str]] = defaultdict(list)
    for folder in sorted(folder_images):
        label = exact.get(folder, by_fold.get(fold(folder)))
        if label is None:
            images = folder_images[folder]
            report.issue("unknown_class_folder", prefix + folder, f"{len(images)} image(s)", count=len(images))
        else:
            folders_of[label].append(folder)
    twins = {label: folders for label, folders in sorted(folders_of.items()) if len(folders) > 1}
    if twins:
        label, folders = next(iter(twins.items()))
        named = " and ".join(f"{prefix}{f} ({len(folder_images[f])} images)" for f in folders)
        raise DataPrepError(
            f"two folders for class {class_names[label]!r}: {named} (names differ only by case or '_'/'-'/spaces); "
            f"merge them into one folder{f' ({len(twins)} classes affected)' if len(twins) > 1 else ''}"
        )
    items: list[Item] = []
    for label, name in enumerate(class_names):
        if label not in folders_of:
            report.issue("missing_class_folder", prefix + name)
            continue
        folder = folders_of[label][0]
        if folder != name:
            report.note(f"folder {folder!r} read as class {name!r}")
        if not folder_images[folder]:
            report.issue("empty_class_folder", prefix + folder)
        for member in folder_images[folder]:
            items.append(Item(0, "", (label,), member, member, source.files[member]))
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
        text = read_text(source, members[0], "split file")
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
        base = base_name(item.source_path)
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
    class_root = find_class_root(source, class_names, data_source)
    check_dataset_matches(source, class_root, data_source, class_names)
    report_bad_names(source, report)
    items = index_class_folders(source, class_names, report, class_root)
    if source.loops:
        report.note(f"symlinked folders read once (they lead to a folder already read): {source.loops[:5]}")
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
        info={
            "root": str(source.root),
            "class_root": class_root,
            "class_folders": len({it.label_ids[0] for it in items}),
        },
    )
