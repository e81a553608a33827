"""PatternNet: `PatternNet/images/<class>/<class>NNN.jpg` (38 x 800, 256x256 RGB JPEG). No official split."""

from __future__ import annotations

from data_prep.class_tables import CLASS_TABLES
from data_prep.folders import build_folder_index
from data_prep.pipeline import DatasetIndex
from data_prep.report import Report

NAME = "patternnet"
ARCHIVES = ("PatternNet.zip",)
CLASS_NAMES = CLASS_TABLES[NAME]


def build_index(root: str, report: Report, use_split_files: bool = True) -> DatasetIndex:
    """Index PatternNet at `root` (extracted folder, its parent, or PatternNet.zip)."""
    return build_folder_index(NAME, CLASS_NAMES, root, ARCHIVES, report)
