"""Per-dataset whitelists of label-preserving transforms (the domain knowledge T of Domain-Aware GRPO).

Every row carries its dataset's whitelist in `extra_info["transforms"]`; the trainer refuses a configured transform
outside it. `identity` is in every list (it always keeps the label), so no list is ever empty. The reasons below are
the table in data_prep/README.md; `knowledge` is the sentence the prompt-injection baseline writes into the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

# The 8 symmetries of the square: identity, rot90, rot180, rot270, hflip, vflip, transpose, transverse. The names are
# verl_ext.transforms' registered ones (tests/data_prep/test_schema_prompts_on_cpu.py checks every list against the
# registry; the trainer checks each row's list again at start-up). Spelt out here so that data_prep imports neither
# torch nor verl: the CLI and its pool workers start in a fraction of a second and stay small.
ALL = ("identity", "rot90", "rot180", "rot270", "hflip", "vflip", "transpose", "transverse")
# Histopathology stained with haematoxylin and eosin: every symmetry, and H&E stain jitter (verl_ext/priors/stain.py).
ALL_AND_STAIN = (*ALL, "hed_jitter")
HFLIP_ONLY = ("identity", "hflip")
VFLIP_ONLY = ("identity", "vflip")


@dataclass(frozen=True)
class Invariance:
    """The transforms that keep a dataset's labels, why, and how the injection prompt states it."""

    transforms: tuple[str, ...]
    reason: str
    knowledge: str


_AERIAL = Invariance(
    ALL,
    "Nadir (top-down) views have no canonical 'up': a scene's category does not depend on orientation or handedness.",
    "Aerial and satellite scenes are seen from directly above, so a scene keeps its category under any rotation "
    "(90, 180 or 270 degrees) and under mirror flips: judge the category from what is on the ground, not from the "
    "image's orientation.",
)
_MICROSCOPY = Invariance(
    ALL,
    "Microscopy/histology: slides and cells have no canonical orientation or side; a cell or tissue type is the same "
    "under any rotation or flip.",
    "Microscopy images have no natural orientation: a cell or tissue type looks the same to its category under any "
    "rotation or mirror flip, so judge it from shape, texture and staining, not from orientation.",
)
_CHEST_XRAY = Invariance(
    HFLIP_ONLY,
    "Frontal chest X-ray: labels are not sided, so a left-right mirror keeps them (the usual ChestX-ray14 "
    "augmentation); apex-up/diaphragm-down is fixed anatomy (effusion, hernia are read at the base), so no vertical "
    "flip or rotation.",
    "Chest X-rays are read apex up; the findings asked for are not tied to the left or right side, so a left-right "
    "mirror image shows the same findings, but the top-bottom direction of the chest matters.",
)
_DEPTH_AXIS = (
    "the vertical axis is depth from the probe/surface (shadowing, layer order), so no vertical flip or rotation"
)
_ORGAN_NOTE = (
    "{view} CT slice; classes include left/right organs (femur, kidney, lung), so no horizontal flip, no 180 degree "
    "rotation (= both flips) and no 90/270 degree rotation (moves the left/right axis to vertical). "
)

_INVARIANCES: dict[str, Invariance] = {
    **{name: _AERIAL for name in ("ucm", "aid", "rsicd", "whu_rs19", "patternnet", "resisc45", "s2_tiles")},
    "medmnist/pathmnist": Invariance(
        ALL_AND_STAIN,
        _MICROSCOPY.reason + " H&E stain intensity varies by lab, scanner and batch, not with the tissue class, so a "
        "stain jitter in the HED colour space keeps the label.",
        _MICROSCOPY.knowledge + " The strength of the haematoxylin and eosin staining varies between slides and does "
        "not change the tissue type.",
    ),
    "medmnist/bloodmnist": _MICROSCOPY,
    "medmnist/tissuemnist": _MICROSCOPY,
    "medmnist/dermamnist": Invariance(
        ALL,
        "Dermatoscopy: a lesion photographed from above has no canonical orientation or side (standard ISIC "
        "augmentation uses rotations and flips).",
        "Dermatoscopic images show a skin lesion from above with no natural orientation: its diagnosis is the same "
        "under any rotation or mirror flip.",
    ),
    "medmnist/retinamnist": Invariance(
        ALL,
        "Fundus photo graded for diabetic retinopathy: the grade counts lesions over the whole retina and does not "
        "depend on orientation or on which eye (a left eye is the mirror of a right eye).",
        "The retinopathy grade depends on the lesions in the whole retina, not on the photo's orientation or on which "
        "eye it is: rotating or mirroring the fundus image keeps its grade.",
    ),
    "medmnist/chestmnist": _CHEST_XRAY,
    "medmnist/pneumoniamnist": _CHEST_XRAY,
    "medmnist/octmnist": Invariance(
        HFLIP_ONLY,
        "Retinal OCT B-scan: left-right is nasal/temporal (mirror of the other eye), which the labels ignore; "
        + _DEPTH_AXIS
        + ".",
        "An OCT B-scan shows the retinal layers with the vitreous on top: mirroring it left-right keeps the diagnosis, "
        "but the top-to-bottom layer order is anatomy and must not be reversed.",
    ),
    "medmnist/breastmnist": Invariance(
        HFLIP_ONLY,
        "Breast ultrasound: left-right mirror is a probe turned around and keeps malignant/benign; "
        + _DEPTH_AXIS
        + ".",
        "A breast ultrasound image has the skin and probe at the top; mirroring it left-right keeps the diagnosis, but "
        "the top-to-bottom (depth) direction, e.g. shadowing behind a mass, carries meaning.",
    ),
    "medmnist/organamnist": Invariance(
        VFLIP_ONLY,
        _ORGAN_NOTE.format(view="Axial")
        + "A vertical flip mirrors front/back only, which keeps every organ and its side.",
        "This is an axial CT slice in radiological convention (the patient's left is on the image's right), so "
        "left/right organs are told apart by their side: a top-bottom flip keeps the organ and its side, a left-right "
        "mirror would swap left and right.",
    ),
    "medmnist/organcmnist": Invariance(
        VFLIP_ONLY,
        _ORGAN_NOTE.format(view="Coronal")
        + "A vertical flip mirrors head/feet only, which keeps every organ and its side.",
        "This is a coronal CT slice (the patient's left is on the image's right), so left/right organs are told "
        "apart by their side: a top-bottom flip keeps the organ and its side, a left-right mirror would swap them.",
    ),
    "medmnist/organsmnist": Invariance(
        VFLIP_ONLY,
        _ORGAN_NOTE.format(view="Sagittal")
        + "In-plane axes are front/back and head/feet, so side is read from context (liver vs spleen); a horizontal "
        "flip is still kept out, as the policy for all left/right subsets, and only the vertical flip is allowed.",
        "This is a sagittal CT slice; left and right organs are told apart by the organs around them (liver on the "
        "right, spleen on the left): a top-bottom flip keeps the organ and its side.",
    ),
}


def invariance(dataset: str) -> Invariance:
    """The `Invariance` of a dataset name ("ucm", "medmnist/organamnist", "organamnist", ...)."""
    key = dataset if dataset in _INVARIANCES else f"medmnist/{dataset}"
    if key not in _INVARIANCES:
        raise KeyError(f"no transform whitelist for dataset {dataset!r}; known: {sorted(_INVARIANCES)}")
    return _INVARIANCES[key]


def allowed_transforms(dataset: str) -> tuple[str, ...]:
    """The label-preserving transforms of `dataset`, in verl_ext.transforms' vocabulary and order."""
    return invariance(dataset).transforms


def known_datasets() -> tuple[str, ...]:
    """Every dataset name that has a whitelist (data_source values plus the demo's "s2_tiles")."""
    return tuple(_INVARIANCES)
