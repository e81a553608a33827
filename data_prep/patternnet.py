"""PatternNet: `PatternNet/images/<class>/<class>NNN.jpg` (38 x 800, 256x256 RGB JPEG). No official split."""

from __future__ import annotations

from data_prep.folders import build_folder_index
from data_prep.pipeline import DatasetIndex
from data_prep.report import Report

NAME = "patternnet"
ARCHIVES = ("PatternNet.zip",)
CLASS_NAMES = tuple(
    """airplane baseball_field basketball_court beach bridge cemetery chaparral christmas_tree_farm closed_road
    coastal_mansion crosswalk dense_residential ferry_terminal football_field forest freeway golf_course harbor
    intersection mobile_home_park nursing_home oil_gas_field oil_well overpass parking_lot parking_space railway river
    runway runway_marking shipping_yard solar_panel sparse_residential storage_tank swimming_pool tennis_court
    transformer_station wastewater_treatment_plant""".split()
)


def build_index(root: str, report: Report, use_split_files: bool = True) -> DatasetIndex:
    """Index PatternNet at `root` (extracted folder, its parent, or PatternNet.zip)."""
    return build_folder_index(NAME, CLASS_NAMES, root, ARCHIVES, report)
