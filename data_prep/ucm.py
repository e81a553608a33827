"""UC Merced Land Use: `UCMerced_LandUse/Images/<class>/<class>NN.tif` (21 x 100 RGB TIFF, a few not 256x256).

TIFFs are stored as lossless PNG at their own size (torchgeo resizes to 256; the model's processor resizes anyway).
Splits: torchgeo/VTAB `uc_merced-{train,val,test}.txt` when found under --root, else seeded stratified.
"""

from __future__ import annotations

from data_prep.class_tables import CLASS_TABLES
from data_prep.folders import build_folder_index
from data_prep.pipeline import DatasetIndex
from data_prep.report import Report

NAME = "ucm"
ARCHIVES = ("UCMerced_LandUse.zip",)
SPLIT_FILES = {"train": "uc_merced-train.txt", "val": "uc_merced-val.txt", "test": "uc_merced-test.txt"}
# folder names, sorted (torchgeo / ImageFolder index order)
CLASS_NAMES = CLASS_TABLES[NAME]


def build_index(root: str, report: Report, use_split_files: bool = True) -> DatasetIndex:
    """Index UCM at `root` (extracted folder, its parent, or UCMerced_LandUse.zip)."""
    return build_folder_index(NAME, CLASS_NAMES, root, ARCHIVES, report, SPLIT_FILES if use_split_files else None)
