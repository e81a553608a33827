"""NWPU-RESISC45: `NWPU-RESISC45/<class>/<class>_NNN.jpg` (45 x 700, 256x256 RGB JPEG).

The official `NWPU-RESISC45.rar` must be extracted first (no rar reader here); torchgeo's `NWPU-RESISC45.zip` is read
directly. Splits: torchgeo/VTAB `resisc45-{train,val,test}.txt` when found under --root, else seeded stratified.
"""

from __future__ import annotations

from data_prep.class_tables import CLASS_TABLES
from data_prep.folders import build_folder_index
from data_prep.pipeline import DatasetIndex
from data_prep.report import Report

NAME = "resisc45"
ARCHIVES = ("NWPU-RESISC45.zip",)
SPLIT_FILES = {"train": "resisc45-train.txt", "val": "resisc45-val.txt", "test": "resisc45-test.txt"}
CLASS_NAMES = CLASS_TABLES[NAME]


def build_index(root: str, report: Report, use_split_files: bool = True) -> DatasetIndex:
    """Index NWPU-RESISC45 at `root` (extracted folder, its parent, or NWPU-RESISC45.zip)."""
    return build_folder_index(NAME, CLASS_NAMES, root, ARCHIVES, report, SPLIT_FILES if use_split_files else None)
