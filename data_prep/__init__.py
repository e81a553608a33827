"""Dataset converters: official remote-sensing and MedMNIST layouts -> parquet that verl's RLHFDataset reads unchanged.

CLI: `python -m data_prep <dataset> --root DIR --out DIR --shots 1,2,4,8 --seed 0` (see data_prep/README.md).
This `__init__` stays light (no verl, no torch), so pool workers start fast.
"""

from data_prep.whitelist import allowed_transforms

DATASETS = ("ucm", "aid", "rsicd", "whu_rs19", "patternnet", "resisc45", "medmnist")

__all__ = ["DATASETS", "allowed_transforms"]
