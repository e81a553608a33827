"""Trivial-feature rows of the probe tables: what colour alone reaches, with no encoder at all.

On the tiny model the probes mostly measure colour (evidence: an image's mean RGB reaches 0.819 on `s2-ndvi4`, above
every random encoder; per-patch mean colour 0.871 mIoU on the segmentation probe, above every encoder). So every
table carries, beside the encoders, the same probe (same splits, same C grid chosen on val) on:

* `colour mean` — the image's mean R, G, B (3 features, 0..1) at the probe's input size;
* `colour mean+std` — mean and standard deviation per channel (6 features);
* `patch colour` (segmentation) — the mean R, G, B of the input pixels each 14-px patch covers: the encoder's own
  patch grid with no encoder.

An encoder whose interval does not clear these rows has not shown it sees more than colour.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from verl_ext.probes.datasets import SPLITS, ProbeSet
from verl_ext.probes.linear import C_GRID, fit_probe, majority_baseline

LINEAR_ROWS = ("colour mean", "colour mean+std")
SEGMENTATION_ROW = "patch colour"
TRIVIAL_ROWS = (*LINEAR_ROWS, SEGMENTATION_ROW)
PATCH = 14


def pixels(images: Sequence[Any], input_size: int) -> np.ndarray:
    """`[n, S, S, 3]` float RGB in 0..1 of the images resized to the probe's input size (as the encoder sees them)."""
    return np.stack(
        [np.asarray(im.convert("RGB").resize((input_size, input_size)), dtype=np.float64) / 255.0 for im in images]
    )


def colour_features(rgb: np.ndarray, with_std: bool) -> np.ndarray:
    """`[n, S, S, 3]` -> `[n, 3]` channel means (+ `[n, 3]` channel standard deviations: `[n, 6]`)."""
    flat = rgb.reshape(len(rgb), -1, 3)  # [n, S*S, 3]
    feats = [flat.mean(1)]
    if with_std:
        feats.append(flat.std(1))
    return np.concatenate(feats, axis=1)


def patch_colour(rgb: np.ndarray, patch: int = PATCH) -> np.ndarray:
    """`[n, S, S, 3]` -> `[n, S/patch, S/patch, 3]` the mean colour of each patch's pixels."""
    n, size = rgb.shape[0], rgb.shape[1]
    g = size // patch
    cells = rgb[:, : g * patch, : g * patch].reshape(n, g, patch, g, patch, 3)  # [n, g, p, g, p, 3]
    return cells.mean(axis=(2, 4))  # [n, g, g, 3]


def trivial_linear(
    probe_set: ProbeSet, idx: dict[str, np.ndarray], input_size: int, grid: Sequence[float] = C_GRID, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """{row: probe entry like an encoder's (one pseudo-block "0", `test_pred`)} for the colour rows."""
    rgb = {s: pixels([probe_set.images[i] for i in idx[s]], input_size) for s in SPLITS}
    y = {s: probe_set.labels[idx[s]] for s in SPLITS}
    out = {}
    for row, with_std in zip(LINEAR_ROWS, (False, True)):
        x = {s: colour_features(rgb[s], with_std) for s in SPLITS}
        res = fit_probe(x, y, grid=grid, seed=seed)
        out[row] = {
            "task": probe_set.name,
            "majority": majority_baseline(y),
            "n": {s: int(len(idx[s])) for s in SPLITS},
            "blocks": {"0": res.as_dict()},
            "test_pred": res.test_pred.tolist(),
        }
    return out


def trivial_segmentation(
    probe_set: ProbeSet,
    idx: dict[str, np.ndarray],
    input_size: int,
    keep: np.ndarray,
    grid: Sequence[float] = C_GRID,
    seed: int = 0,
) -> dict[str, Any]:
    """The `patch colour` row of the segmentation probe (`keep`: the training-patch subsample of the encoders)."""
    x, y = {}, {}
    for s in SPLITS:
        feats = patch_colour(pixels([probe_set.images[i] for i in idx[s]], input_size))  # [n, g, g, 3]
        if feats.shape[1:3] != probe_set.labels.shape[1:]:
            raise ValueError(f"patch grid {feats.shape[1:3]} != label grid {probe_set.labels.shape[1:]}")
        x[s], y[s] = feats.reshape(-1, 3), probe_set.labels[idx[s]].reshape(-1)
    x["train"], y["train"] = x["train"][keep], y["train"][keep]
    res = fit_probe(x, y, metric="miou", num_classes=len(probe_set.class_names), grid=grid, seed=seed)
    return {"task": probe_set.name, "blocks": {"0": res.as_dict()}, "test_pred": res.test_pred.tolist()}
