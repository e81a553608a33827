"""WHU-RS19: `<top>/<Class>/*.jpg` (19 classes, 1,005 RGB JPEG, mostly 600x600 but not all).

The top folder's name differs between copies (found by content); file names mix `airport_01.jpg` and `beach-01.jpg`,
so labels come from the folder only. Class order = case-sensitive sort of the original folder names (torchrs /
ImageFolder order): the camelCase `footballField` and `railwayStation` come last. No official split.
"""

from __future__ import annotations

from data_prep.class_tables import CLASS_TABLES
from data_prep.folders import build_folder_index
from data_prep.pipeline import DatasetIndex
from data_prep.report import Report

NAME = "whu_rs19"
ARCHIVES = ("WHU-RS19.zip",)
CLASS_NAMES = CLASS_TABLES[NAME]


def build_index(root: str, report: Report, use_split_files: bool = True) -> DatasetIndex:
    """Index WHU-RS19 at `root` (extracted folder, its parent, or WHU-RS19.zip)."""
    return build_folder_index(NAME, CLASS_NAMES, root, ARCHIVES, report)
