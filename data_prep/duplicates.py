"""Exact duplicates: images whose file bytes (or, for arrays, pixels) are identical.

Found before any split is drawn (a BLAKE2b digest of every image: files in the pool workers, arrays inline), so that
a copy never lands in train and its twin in val/test, and an image never carries two labels unnoticed. The policy
(`--duplicates`):
- `refuse` (default): copies under two labels are an error naming both paths; copies under one label are kept, each
  group in one split (seeded split), reported in `report.json` `duplicates` and a note;
- `keep`: like `refuse`, but copies under two labels are kept (a warning);
- `drop`: one copy of each group is kept (the first by split, then index: the train copy of an official split) and
  the others are skipped (`duplicate_image`); a group under two labels is dropped whole.
Official splits (MedMNIST, RSICD, UCM/RESISC45 split files) are not redrawn: a group spanning them is a warning
(`drop` keeps only its first copy).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from data_prep.report import DataPrepError, Report
from data_prep.source import FileRef, read_ref
from data_prep.splits import SPLITS

POLICIES = ("refuse", "keep", "drop")
MAX_EXAMPLES = 20
# first bytes of JPEG, PNG, TIFF (both byte orders), BMP, GIF, WebP (RIFF)
_IMAGE_MAGIC = (b"\xff\xd8", b"\x89PNG", b"II*\x00", b"MM\x00*", b"BM", b"GIF8", b"RIFF")


def digest(payload: FileRef | np.ndarray) -> bytes | None:
    """16-byte BLAKE2b of a file's bytes or of an array's shape, dtype and pixels; None if it cannot be read or does
    not start like an image (the decode reports those with their own reason: twenty empty files are not duplicates)."""
    h = hashlib.blake2b(digest_size=16)
    if isinstance(payload, np.ndarray):
        h.update(f"{payload.shape}{payload.dtype}".encode())
        h.update(np.ascontiguousarray(payload).tobytes())
        return h.digest()
    try:
        data = read_ref(payload)
    except Exception:  # noqa: BLE001 - any unreadable file: the decode step reports it with its reason
        return None
    if not data.startswith(_IMAGE_MAGIC):  # empty or not an image: fails its decode, not a duplicate
        return None
    h.update(data)
    return h.digest()


def digest_chunk(payloads: list[Any]) -> list[bytes | None]:
    """Pool entry point: digests of a chunk of payloads, in order."""
    return [digest(p) for p in payloads]


def exact_groups(digests: Iterable[bytes | None]) -> list[list[int]]:
    """Positions sharing a digest (groups of 2 or more, each ascending, ordered by first position)."""
    by_digest: dict[bytes, list[int]] = defaultdict(list)
    for pos, d in enumerate(digests):
        if d is not None:
            by_digest[d].append(pos)
    return sorted((g for g in by_digest.values() if len(g) > 1), key=lambda g: g[0])


def find_duplicates(
    items: list[Any],
    payloads: Iterator[Any],
    map_files: Callable[[Iterator[Any]], Iterator[bytes | None]],
) -> list[list[Any]]:
    """Groups of items with identical images; files are digested through `map_files` (the pool), arrays inline."""
    first = next(payloads, None)
    if first is None:
        return []

    def chained() -> Iterator[Any]:
        yield first
        yield from payloads

    digests = (digest(p) for p in chained()) if isinstance(first, np.ndarray) else map_files(chained())
    return [[items[p] for p in g] for g in exact_groups(digests)]


def _order(item: Any) -> tuple[int, int]:
    """Split order (train first; none drawn yet = 0), then index."""
    return (SPLITS.index(item.split) if item.split else 0, item.index)


def _labels(group: list[Any], class_names: list[str]) -> list[str]:
    return sorted({"; ".join(class_names[c] for c in it.label_ids) for it in group})


def apply_policy(
    items: list[Any], groups: list[list[Any]], policy: str, class_names: list[str], report: Report
) -> tuple[list[Any], dict[str, Any]]:
    """Apply `policy` to the duplicate `groups`; returns (the items kept, the report.json summary)."""
    if policy not in POLICIES:
        raise DataPrepError(f"--duplicates must be one of {POLICIES}, got {policy!r}")
    across = [g for g in groups if len({it.label_ids for it in g}) > 1]
    if across and policy == "refuse":
        one_per_label = {it.label_ids: it for it in reversed(across[0])}  # the first copy under each label
        named = " and ".join(
            f"{it.source_path} ({class_names[it.label_ids[0]]})" for it in sorted(one_per_label.values(), key=_order)
        )
        raise DataPrepError(
            f"byte-identical images under different labels: {named} ({len(across)} such group(s)); remove the wrongly "
            "labelled copy, or rerun with --duplicates drop (drops such images) or --duplicates keep"
        )
    across_ids = {id(g[0]) for g in across}
    official = [g for g in groups if len({it.split for it in g}) > 1 and all(it.split for it in g)]
    dropped: set[int] = set()
    if policy == "drop":
        for g in groups:
            ordered = sorted(g, key=_order)
            whole = id(g[0]) in across_ids
            for it in ordered if whole else ordered[1:]:
                dropped.add(id(it))
                why = f"same bytes as {ordered[0].source_path}" if not whole else f"labels {_labels(g, class_names)}"
                report.count_skip("duplicate_image", it.source_path, why)
    n_images = sum(len(g) for g in groups)
    if groups:
        kept = "dropped" if policy == "drop" else "kept, each group in one split"
        report.note(f"{len(groups)} group(s) of byte-identical images ({n_images} images): {kept}")
    if across and policy == "keep":
        report.warn(f"{len(across)} group(s) of byte-identical images under different labels kept (--duplicates keep)")
    if official and policy != "drop":
        ex = " = ".join(f"{it.split}:{it.source_path}" for it in official[0][:2])
        report.warn(
            f"{len(official)} group(s) of byte-identical images span the official splits (e.g. {ex}); "
            "--duplicates drop keeps the first copy only"
        )
    summary = {
        "policy": policy,
        "groups": len(groups),
        "images": n_images,
        "across_labels": len(across),
        "across_official_splits": len(official),
        "examples": [[it.source_path for it in g] for g in groups[:MAX_EXAMPLES]],
    }
    return [it for it in items if id(it) not in dropped], summary


def group_of(groups: list[list[Any]]) -> dict[int, Any]:
    """{id(item): the group's first item} for every copy after the first (their split follows the first's)."""
    return {id(it): g[0] for g in groups for it in g[1:]}
