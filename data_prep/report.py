"""Run report: what was read, converted, skipped and why; and the `--on-error skip|fail` policy.

Every problem goes through `Report.issue`: with `fail` it raises `DataPrepError` at once (a clear message naming the
file), with `skip` it is counted under its reason and the first examples are kept. Nothing is dropped without a count.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

# reason code -> human description (also the README's table)
REASONS = {
    "corrupt_image": "image cannot be decoded (corrupt, truncated or not an image)",
    "unsupported_image": "image mode/dtype that cannot be converted to RGB safely (e.g. float)",
    "extreme_aspect_ratio": "long side over 200 x the short side (Qwen2.5-VL's processor refuses it)",
    "too_many_pixels": "image with more pixels than PIL's decompression-bomb limit (Image.MAX_IMAGE_PIXELS)",
    "unknown_class_folder": "folder whose name is in no class table of the dataset",
    "empty_class_folder": "class folder without any image",
    "missing_class_folder": "class of the table without a folder",
    "file_outside_class_folder": "image not directly inside a class folder",
    "unlabeled": "image in no class list (RSICD) and no class in its filename",
    "conflicting_labels": "image listed under two classes",
    "listed_image_missing": "a class list or split file names an image that does not exist",
    "unknown_class_list": "class list file whose name is in no class table",
    "not_in_split_files": "image named by none of the split files",
    "missing_npz_key": "npz without one of the six MedMNIST arrays (that split is skipped)",
    "bad_npz_array": "npz array with a wrong shape/dtype or truncated data (that split is skipped)",
    "label_out_of_range": "label outside the subset's label range (or not 0/1 for multi-label)",
    "wrong_subset": "npz arrays whose shape is not the one of the subset and size asked for",
    "unreadable_archive_member": "zip member that cannot be read (encrypted, or an unsupported compression method)",
    "undecodable_file_name": "file name that is not valid UTF-8 (no parquet or JSON string can hold it)",
    "duplicate_image": "byte-identical copy of another image (dropped by --duplicates drop)",
}
MAX_EXAMPLES = 50


class DataPrepError(RuntimeError):
    """A data problem that stops the run (`--on-error fail`, or a problem no skip can fix)."""


class Report:
    """Accumulates counts for report.json; raises on the first issue under `on_error="fail"`."""

    def __init__(self, on_error: str = "fail") -> None:
        if on_error not in ("skip", "fail"):
            raise ValueError(f"on_error must be 'skip' or 'fail', got {on_error!r}")
        self.on_error = on_error
        self.skips: Counter[str] = Counter()
        self.examples: list[dict[str, str]] = []
        self.conversions: Counter[str] = Counter()
        self.image_sizes: Counter[str] = Counter()
        self.ignored: list[str] = []
        self.notes: list[str] = []
        self.warnings: list[str] = []
        self._seen: set[tuple[str, str]] = set()

    def issue(self, reason: str, path: str, detail: str = "", count: int = 1) -> None:
        """Record (skip) or raise (fail) a problem with `path`; `count` = how many images it removes."""
        if reason not in REASONS:
            raise ValueError(f"unknown issue reason {reason!r}")
        if (reason, path) in self._seen:
            return
        self._seen.add((reason, path))
        text = f"[{reason}] {REASONS[reason]}: {path}" + (f" ({detail})" if detail else "")
        if self.on_error == "fail":
            raise DataPrepError(text + " — rerun with --on-error skip to skip and count such data")
        self.skips[reason] += count
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append({"reason": reason, "path": path, "detail": detail, "count": str(count)})

    def count_skip(self, reason: str, path: str, detail: str = "") -> None:
        """Count an image left out on the user's explicit request (e.g. `--duplicates drop`), whatever `on_error`."""
        if reason not in REASONS:
            raise ValueError(f"unknown issue reason {reason!r}")
        self.skips[reason] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append({"reason": reason, "path": path, "detail": detail, "count": "1"})

    def refuse(self, reason: str, path: str, detail: str = "") -> None:
        """Raise for a problem no skip can fix (the input is not what was asked for), whatever `on_error` says."""
        if reason not in REASONS:
            raise ValueError(f"unknown issue reason {reason!r}")
        raise DataPrepError(f"[{reason}] {REASONS[reason]}: {path}" + (f" ({detail})" if detail else ""))

    def ignore(self, path: str) -> None:
        """Record a non-image file inside the dataset tree (Thumbs.db, README...), reported but never an error."""
        self.ignored.append(path)

    def note(self, text: str) -> None:
        """Record a remark for the user (folder renamed, label from filename, short class...)."""
        if text not in self.notes:
            self.notes.append(text)

    def warn(self, text: str) -> None:
        """Record something the user must see (an empty split, a short k-shot file); the CLI prints it."""
        if text not in self.warnings:
            self.warnings.append(text)

    def add_image(self, conversions: tuple[str, ...], width: int, height: int) -> None:
        """Count one written image's conversions and its source size."""
        self.conversions.update(conversions)
        self.image_sizes[f"{width}x{height}"] += 1

    def to_dict(self) -> dict[str, Any]:
        """The skips/conversions part of report.json."""
        sizes = self.image_sizes.most_common()
        top = dict(sorted(sizes[:20]))
        if len(sizes) > 20:
            top["other"] = sum(n for _, n in sizes[20:])
        return {
            "skipped": {
                "total": sum(self.skips.values()),
                "by_reason": dict(sorted(self.skips.items())),
                "examples": self.examples,
            },
            "converted": dict(sorted(self.conversions.items())),
            "source_image_sizes": top,
            "ignored_files": {"total": len(self.ignored), "examples": sorted(self.ignored)[:MAX_EXAMPLES]},
            "warnings": self.warnings,
            "notes": self.notes,
        }


def dumps(report: dict[str, Any]) -> str:
    """Stable JSON text (sorted keys where dicts are maps, 1-space indent, trailing newline)."""
    return json.dumps(report, indent=1, ensure_ascii=False) + "\n"
