"""AID: `AID/<Class>/<class_lower>_<N>.jpg` (30 classes, 10,000 600x600 RGB JPEG). No official split."""

from __future__ import annotations

from data_prep.class_tables import CLASS_TABLES
from data_prep.folders import build_folder_index
from data_prep.pipeline import DatasetIndex
from data_prep.report import Report

NAME = "aid"
ARCHIVES = ("AID.zip",)
# folder names (CamelCase), sorted; RSICD's class lists use the same spelling
CLASS_NAMES = CLASS_TABLES[NAME]


def build_index(root: str, report: Report, use_split_files: bool = True) -> DatasetIndex:
    """Index AID at `root` (extracted folder, its parent, or AID.zip)."""
    return build_folder_index(NAME, CLASS_NAMES, root, ARCHIVES, report)
