"""MedMNIST v2, the twelve 2-D subsets, from the official npz files (`<flag>.npz` = 28 px, `<flag>_{64,128,224}.npz`).

Each npz holds exactly six arrays: `{train,val,test}_images` (uint8 N x H x W, or N x H x W x 3) and
`{train,val,test}_labels` (N x 1 class index; ChestMNIST N x 14 0/1 findings). The official split is used as is.
A missing key, a wrong shape or a truncated array skips that split (reported) or fails; an out-of-range label skips
that row or fails. Class names and sizes are this project's copy of medmnist's INFO (no medmnist import at run time).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep.npz import NpzArrays, NpzError
from data_prep.pipeline import DatasetIndex, Item
from data_prep.report import DataPrepError, Report
from data_prep.schema import NO_FINDING
from data_prep.splits import SPLITS

SIZES = (28, 64, 128, 224)
ORGAN_CLASSES = (
    "bladder femur-left femur-right heart kidney-left kidney-right liver lung-left lung-right pancreas spleen".split()
)


@dataclass(frozen=True)
class Subset:
    """One MedMNIST 2-D subset (medmnist INFO[flag], plus the prompt's wording)."""

    labels: tuple[str, ...]
    n_channels: int
    n_samples: tuple[int, int, int]  # train, val, test
    subject: str
    multi_label: bool = False
    task_note: str = ""


_ORGAN_NOTE = "Left and right mean the patient's left and right."
SUBSETS: dict[str, Subset] = {
    "pathmnist": Subset(
        (
            "adipose",
            "background",
            "debris",
            "lymphocytes",
            "mucus",
            "smooth muscle",
            "normal colon mucosa",
            "cancer-associated stroma",
            "colorectal adenocarcinoma epithelium",
        ),
        3,
        (89996, 10004, 7180),
        "a colorectal cancer histology patch (H&E stain)",
    ),
    "chestmnist": Subset(
        tuple(
            "atelectasis cardiomegaly effusion infiltration mass nodule pneumonia pneumothorax consolidation edema "
            "emphysema fibrosis pleural hernia".split()
        ),
        1,
        (78468, 11219, 22433),
        "a frontal chest X-ray",
        multi_label=True,
    ),
    "dermamnist": Subset(
        (
            "actinic keratoses and intraepithelial carcinoma",
            "basal cell carcinoma",
            "benign keratosis-like lesions",
            "dermatofibroma",
            "melanoma",
            "melanocytic nevi",
            "vascular lesions",
        ),
        3,
        (7007, 1003, 2005),
        "a dermatoscopic image of a pigmented skin lesion",
    ),
    "octmnist": Subset(
        ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"),
        1,
        (97477, 10832, 1000),
        "a retinal optical coherence tomography (OCT) B-scan",
    ),
    "pneumoniamnist": Subset(("normal", "pneumonia"), 1, (4708, 524, 624), "a pediatric frontal chest X-ray"),
    "retinamnist": Subset(
        ("0", "1", "2", "3", "4"),
        3,
        (1080, 120, 400),
        "a retinal fundus photograph",
        task_note="The categories are diabetic retinopathy grades on the ordinal scale 0 (no retinopathy) to 4 "
        "(proliferative retinopathy); answer with the grade number.",
    ),
    "breastmnist": Subset(
        ("malignant", "normal, benign"),
        1,
        (546, 78, 156),
        "a breast ultrasound image",
        task_note="'normal, benign' is a single category.",
    ),
    "bloodmnist": Subset(
        (
            "basophil",
            "eosinophil",
            "erythroblast",
            "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)",
            "lymphocyte",
            "monocyte",
            "neutrophil",
            "platelet",
        ),
        3,
        (11959, 1712, 3421),
        "a microscopy image of a single blood cell",
    ),
    "tissuemnist": Subset(
        (
            "Collecting Duct, Connecting Tubule",
            "Distal Convoluted Tubule",
            "Glomerular endothelial cells",
            "Interstitial endothelial cells",
            "Leukocytes",
            "Podocytes",
            "Proximal Tubule Segments",
            "Thick Ascending Limb",
        ),
        1,
        (165466, 23640, 47280),
        "a kidney cortex microscopy image",
    ),
    "organamnist": Subset(ORGAN_CLASSES, 1, (34561, 6491, 17778), "an axial abdominal CT slice", task_note=_ORGAN_NOTE),
    "organcmnist": Subset(ORGAN_CLASSES, 1, (12975, 2392, 8216), "a coronal abdominal CT slice", task_note=_ORGAN_NOTE),
    "organsmnist": Subset(
        ORGAN_CLASSES, 1, (13932, 2452, 8827), "a sagittal abdominal CT slice", task_note=_ORGAN_NOTE
    ),
}
FLAGS = tuple(SUBSETS)


def class_names(flag: str) -> list[str]:
    """The answer vocabulary: the subset's labels (ChestMNIST: the 14 findings + "no finding")."""
    sub = SUBSETS[flag]
    return [*sub.labels, NO_FINDING] if sub.multi_label else list(sub.labels)


def npz_name(flag: str, size: int) -> str:
    """Official file name: `<flag>.npz` for 28 px, `<flag>_<size>.npz` for MedMNIST+."""
    if size not in SIZES:
        raise ValueError(f"MedMNIST size must be one of {SIZES}, got {size}")
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def flag_and_size_of(file_name: str) -> tuple[str, int] | None:
    """(flag, size) an official file name stands for (`pathmnist_64.npz` -> ("pathmnist", 64)), or None."""
    for flag in FLAGS:
        for size in SIZES:
            if file_name == npz_name(flag, size):
                return flag, size
    return None


def find_npz(root: str | Path, flag: str, size: int) -> Path:
    """The npz at `root` (the file itself, or a folder holding it at any depth); a file named for another
    flag or size is refused."""
    root = Path(root).expanduser()
    if root.is_file():
        expected = npz_name(flag, size)
        if root.name != expected:
            other = flag_and_size_of(root.name)
            hint = f"; it is the file of --flag {other[0]} --size {other[1]}" if other else ""
            raise DataPrepError(f"{root} does not match --flag {flag} --size {size} (expected {expected}){hint}")
        return root
    name = npz_name(flag, size)
    found = sorted(root.rglob(name)) if root.is_dir() else []
    if not found:
        raise DataPrepError(f"{name} not found under {root} (download it from Zenodo record 10519652)")
    if len(found) > 1:  # a stale copy next to the current one: which one is meant cannot be guessed
        listed = ", ".join(str(f) for f in found[:5]) + (f" (+{len(found) - 5} more)" if len(found) > 5 else "")
        raise DataPrepError(f"{len(found)} copies of {name} under {root}: {listed}; pass the one to convert as --root")
    return found[0]


def row_labels(labels: np.ndarray, row: int, sub: Subset) -> tuple[int, ...] | None:
    """Label ids of one row, or None if out of range (ChestMNIST: positives, or the 'no finding' id)."""
    values = np.atleast_1d(labels[row])
    if sub.multi_label:
        if not np.isin(values, (0, 1)).all():
            return None
        positives = tuple(int(i) for i in np.flatnonzero(values))
        return positives or (len(sub.labels),)
    value = int(values[0])
    return (value,) if 0 <= value < len(sub.labels) else None


def _check_split(arrays: NpzArrays, flag: str, size: int, split: str, sub: Subset, report: Report) -> np.ndarray | None:
    """Validate one split's two arrays; return its labels, or None (reported) when the split is unusable."""
    for key in (f"{split}_images", f"{split}_labels"):
        if key not in arrays.keys:
            report.issue("missing_npz_key", f"{arrays.path.name}:{key}", f"keys present: {arrays.keys}")
            return None
    try:
        shape, dtype, _ = arrays.header(f"{split}_images")
        labels = arrays.load(f"{split}_labels")
    except NpzError as exc:
        report.issue("bad_npz_array", f"{arrays.path.name}:{split}", str(exc))
        return None
    width = len(sub.labels) if sub.multi_label else 1
    good_images = len(shape) == 3 or (len(shape) == 4 and shape[3] in (1, 3))
    if not good_images:  # e.g. a MedMNIST 3D volume (N x 28 x 28 x 28): skipping its splits would leave nothing
        detail = f"images of shape {list(shape)}, expected N x H x W (x 3): not a 2-D MedMNIST file (3-D: *3d.npz)"
        report.refuse("wrong_subset", f"{arrays.path.name}:{split}_images", detail)
    good_labels = labels.ndim in (1, 2) and labels.shape[0] == shape[0]
    if not good_images or not good_labels or dtype not in (np.uint8, np.uint16) or labels.dtype.kind not in "uib":
        detail = (
            f"images {shape} {dtype}, labels {labels.shape} {labels.dtype}; expected N x H x W[x3] uint8, N x {width}"
        )
        report.issue("bad_npz_array", f"{arrays.path.name}:{split}", detail)
        return None
    _check_subset(arrays.path.name, split, shape, labels, flag, size, report)
    return labels


def _check_subset(
    name: str, split: str, shape: tuple[int, ...], labels: np.ndarray, flag: str, size: int, report: Report
) -> None:
    """Refuse arrays that are not `flag` at `size` px: image side or channels, label width or range (another subset's
    npz under this flag would otherwise be converted under this subset's class names and transforms)."""
    sub = SUBSETS[flag]
    side = f"N x {size} x {size}" + (" x 3" if sub.n_channels == 3 else "")
    channels = 3 if len(shape) == 4 and shape[3] == 3 else 1
    if tuple(shape[1:3]) != (size, size) or channels != sub.n_channels:
        detail = f"images of shape {list(shape)}, expected {side} for {flag} at {size} px: not a {flag} file"
        report.refuse("wrong_subset", f"{name}:{split}_images", detail)
    width = len(sub.labels) if sub.multi_label else 1
    if (labels.shape[1] if labels.ndim == 2 else 1) != width:
        detail = f"labels of shape {list(labels.shape)}, expected N x {width} for {flag}: not a {flag} file"
        report.refuse("wrong_subset", f"{name}:{split}_labels", detail)
    flat = labels.reshape(len(labels), width).astype(np.int64)  # N x width (N may be 0: an empty split)
    bad = ~np.isin(flat, (0, 1)) if sub.multi_label else (flat < 0) | (flat >= len(sub.labels))
    if bad.any():
        row = int(np.flatnonzero(bad.any(axis=1))[0])
        value = int(flat[row][bad[row]][0])
        allowed = "0/1 per finding" if sub.multi_label else f"0..{len(sub.labels) - 1}"
        detail = f"label {value}; {flag} has {allowed}: not a {flag} file, or a damaged one"
        report.refuse("label_out_of_range", f"{name}:{split}_images[{row}]", detail)


def build_index(root: str, report: Report, flag: str, size: int = 28, check_sizes: bool = False) -> DatasetIndex:
    """Index one MedMNIST subset's npz; `check_sizes` asserts the official split sizes (as the medmnist API does)."""
    if flag not in SUBSETS:
        raise DataPrepError(f"unknown MedMNIST flag {flag!r}; the 2-D flags are {list(FLAGS)}")
    sub = SUBSETS[flag]
    path = find_npz(root, flag, size)
    arrays = NpzArrays(path)
    items: list[Item] = []
    shapes = {}
    for s, split in enumerate(SPLITS):
        labels = _check_split(arrays, flag, size, split, sub, report)
        if labels is None:
            continue
        shapes[split] = list(arrays.header(f"{split}_images")[0])
        if check_sizes and len(labels) != sub.n_samples[s]:
            raise DataPrepError(f"{path.name}: {split} has {len(labels)} rows, official {sub.n_samples[s]}")
        for row in range(len(labels)):
            ids = row_labels(labels, row, sub)
            assert ids is not None  # every label was range-checked by _check_subset
            items.append(Item(row, split, ids, f"{path.name}:{split}_images[{row}]"))

    def stream(selected: list[Item]) -> Iterator[np.ndarray]:
        for split in SPLITS:
            rows = [it.index for it in selected if it.split == split]
            if rows:
                yield from arrays.iter_rows(f"{split}_images", rows)

    info = {"root": str(path.parent.resolve()), "npz": path.name, "size": size, "array_shapes": shapes}
    return DatasetIndex(
        data_source=f"medmnist/{flag}",
        domain="medical",
        subject=sub.subject,
        class_names=class_names(flag),
        items=items,
        split_source=f"official ({path.name})",
        multi_label=sub.multi_label,
        task_note=sub.task_note,
        stream=stream,
        info=info,
    )
