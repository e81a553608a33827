"""Real handwritten digits that ship offline in scikit-learn: a task whose cues depend on orientation.

    python -m data_prep digits --out data/digits        # train.parquet + test.parquet, 70/30 seeded split

The source is `sklearn.datasets.load_digits` (the test set of UCI's "optical recognition of handwritten digits",
shipped in scikit-learn's `datasets/data/digits.csv.gz`, BSD-3): 1797 real handwritten digits by 13 writers, each a
32 x 32 bitmap reduced to 8 x 8 (a pixel = how many of its 4 x 4 block's 16 bits are ink, 0..16). The seeded split is
over images, not writers: held-out digits are new images of writers also seen in training.
Each image becomes an 8-bit grey image, ink light on dark (v * 255 / 16, rounded), upscaled by the converter's
nearest-neighbour rule to `--min-size` (56: factor 7, each source pixel a 7 x 7 block, no value invented; the tiny
Qwen2.5-VL reads 56 x 56 as 4 x 4 patches of 14 px = 4 merged image tokens), written as RGB PNG.

Every row carries the square's 8 symmetries as its whitelist (`extra_info["transforms"]`, the vocabulary of
`verl_ext.transforms`): a digit turned or mirrored is still the same digit, only seen in another orientation. That is
true only of a class set in which no symmetry turns one kept digit into another, so some classes are left out:

- 6 and 9: a 6 turned by 180 degrees is drawn as a 9 (and a 9 as a 6); with both kept, the label of a turned image
  would depend on the orientation the model is meant to ignore.
- 2 and 5: a 5 flipped top-to-bottom is drawn as a 2 (top arc, stroke down to the left, bottom bar), and a 2 flipped
  as a 5. Measured on the data: a 1-nearest-neighbour classifier whose distance is the minimum over the 8 symmetries
  (seeded 50/50 split, scikit-learn) confuses 2 and 5 in 9 of 179 test images, more than any other pair.
- kept by default: 0, 1, 3, 4, 7, 8 (1077 images; that orbit classifier reads them at 0.989, chance 1/6). A mirrored
  3 or 7, a turned 1 or 4 is no other digit of the set. `--classes` picks another set, refusing one that holds both
  digits of a pair above.

Train rows are upright scans only (what an SFT warm start sees); the whitelist is there for the RL rows and the
evaluation, which apply the transforms themselves.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import numpy as np

from data_prep.pipeline import DatasetIndex, Item
from data_prep.report import DataPrepError, Report
from data_prep.whitelist import ALL

NAME = "digits"
SUBJECT = "a scan of one handwritten digit (8 x 8 pixels, enlarged)"
SOURCE = "scikit-learn load_digits (UCI optdigits test set, 1797 images, 8 x 8, ink 0-16)"
DEFAULT_CLASSES = (0, 1, 3, 4, 7, 8)
# Digit pairs that one of the square's symmetries turns into each other (see the module docstring).
COLLIDING_PAIRS = ((6, 9), (2, 5))
INK_MAX = 16  # load_digits' pixel range is 0..16


def parse_classes(text: str) -> tuple[int, ...]:
    """'0,1,3' -> (0, 1, 3), sorted; at least two distinct digits 0-9, never both digits of a colliding pair.

    Raises:
        ValueError: a one-line reason (the CLI prints it as `--classes ...`).
    """
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or any(not (len(p) == 1 and p.isdigit()) for p in parts):
        raise ValueError(f"classes must be digits 0-9 separated by commas, got {text!r}")
    classes = tuple(sorted({int(p) for p in parts}))
    if len(classes) < 2:
        raise ValueError(f"a classification set needs at least two digits, got {list(classes)}")
    for a, b in COLLIDING_PAIRS:
        if a in classes and b in classes:
            raise ValueError(
                f"{a} and {b} turn into each other under the whitelisted symmetries, so a transformed image's label "
                f"would depend on its orientation; keep at most one of them"
            )
    return classes


def to_uint8(images: np.ndarray) -> np.ndarray:
    """`[N, 8, 8]` ink values 0..16 -> `[N, 8, 8]` uint8 grey, round(v * 255 / 16) (16 -> 255, 8 -> 128)."""
    values = np.asarray(images, dtype=np.float64)  # [N, 8, 8]
    if values.size and (values.min() < 0 or values.max() > INK_MAX):
        raise DataPrepError(f"digits: pixel values outside 0..{INK_MAX} ({values.min()}..{values.max()})")
    return np.floor(values * 255.0 / INK_MAX + 0.5).astype(np.uint8)  # [N, 8, 8]


def load_source() -> tuple[np.ndarray, np.ndarray]:
    """(images `[1797, 8, 8]` float, targets `[1797]` int) from the installed scikit-learn (no download)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataPrepError("digits: scikit-learn is not installed (pip install scikit-learn)") from None
    bunch = load_digits()
    return np.asarray(bunch.images), np.asarray(bunch.target, dtype=np.int64)


def build_index(report: Report, classes: tuple[int, ...] = DEFAULT_CLASSES) -> DatasetIndex:
    """An in-memory index of the kept digits (no official split: the pipeline draws a seeded stratified one).

    Args:
        report: the run's report (unused: the shipped data has nothing to skip).
        classes: the digits kept (`parse_classes`); class id k is `classes[k]`, its name the digit as text.
    """
    images, targets = load_source()
    grey = to_uint8(images)  # [N, 8, 8]
    position = {digit: k for k, digit in enumerate(classes)}
    items = [
        Item(i, "", (position[int(t)],), f"sklearn:digits[{i}]") for i, t in enumerate(targets) if int(t) in position
    ]

    def stream(selected: list[Item]) -> Iterator[np.ndarray]:
        for item in selected:
            yield grey[item.index]

    info = {"source": SOURCE, "kept_digits": list(classes), "left_out": sorted(set(range(10)) - set(classes))}
    return DatasetIndex(
        NAME,
        "general",
        SUBJECT,
        [str(d) for d in classes],
        items,
        "",
        stream=stream,
        info=info,
        transforms=ALL,
    )


def classes_argument(text: str) -> tuple[int, ...]:
    """argparse type of `--classes`."""
    try:
        return parse_classes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
