"""The probes of one encoder: a linear probe per block on each classification set, a patch-level segmentation probe
per block, from raster-order features (`features.py`) on the fixed splits of `datasets.py`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from verl_ext.probes.datasets import SPLITS, ProbeSet
from verl_ext.probes.features import block_features, mean_pool_normalised
from verl_ext.probes.linear import C_GRID, fit_probe, majority_baseline

MAX_SEG_TRAIN_PATCHES = 20_000


def limit_splits(probe_set: ProbeSet, limit: int | None, seed: int = 0) -> dict[str, np.ndarray]:
    """Indices per split, each capped at `limit` (a seeded subsample, order kept); None: all."""
    rng = np.random.default_rng(seed)
    out = {}
    for split in SPLITS:
        idx = probe_set.index(split)
        if limit is not None and len(idx) > limit:
            idx = np.sort(rng.choice(idx, size=limit, replace=False))
        out[split] = idx
    return out


def linear_probe(
    encoder: torch.nn.Module,
    processor: Any,
    probe_set: ProbeSet,
    input_size: int,
    blocks: Sequence[int],
    limit: int | None = None,
    seed: int = 0,
    batch_size: int = 32,
    progress: Callable[[int], None] | None = None,
    grid: Sequence[float] = C_GRID,
) -> dict[str, Any]:
    """Test accuracy per block (C chosen on val), with the majority-class baseline.

    Returns:
        {"task", "majority", "n": {split: count}, "blocks": {block: ProbeResult dict}, "test_pred": the last
        block's test predictions, "test_true", "test_units": each test image's bootstrap unit}.
    """
    idx = limit_splits(probe_set, limit, seed)
    order = np.concatenate([idx[s] for s in SPLITS])
    images = [probe_set.images[i] for i in order]
    feats = block_features(encoder, processor, images, input_size, blocks, mean_pool_normalised, batch_size, progress)
    y = {s: probe_set.labels[idx[s]] for s in SPLITS}
    bounds = np.cumsum([0] + [len(idx[s]) for s in SPLITS])
    results, fits = {}, {}
    for b, f in feats.items():
        x = {s: f[bounds[i] : bounds[i + 1]].numpy() for i, s in enumerate(SPLITS)}
        fits[b] = fit_probe(x, y, grid=grid, seed=seed)
        results[b] = fits[b].as_dict()
    return {
        "task": probe_set.name,
        "majority": majority_baseline(y),
        "n": {s: int(len(idx[s])) for s in SPLITS},
        "blocks": results,
        "test_pred": fits[max(fits)].test_pred.tolist(),
        "test_true": y["test"].tolist(),
        "test_units": probe_set.unit()[idx["test"]].tolist(),
    }


def segmentation_keep(n_train_patches: int, seed: int = 0) -> np.ndarray:
    """Indices of the training patches the segmentation probe fits on (all, or a seeded `MAX_SEG_TRAIN_PATCHES`)."""
    keep = np.arange(n_train_patches)
    if len(keep) > MAX_SEG_TRAIN_PATCHES:
        keep = np.sort(np.random.default_rng(seed).choice(keep, MAX_SEG_TRAIN_PATCHES, replace=False))
    return keep


def _patch_normalised(grid: torch.Tensor) -> torch.Tensor:
    """Each patch feature L2-normalised, half precision to keep every block's patches in memory (`[h, w, D]`)."""
    return (grid / grid.norm(dim=-1, keepdim=True).clamp_min(1e-12)).half()


def segmentation_probe(
    encoder: torch.nn.Module,
    processor: Any,
    probe_set: ProbeSet,
    input_size: int,
    blocks: Sequence[int],
    limit: int | None = None,
    seed: int = 0,
    batch_size: int = 32,
    progress: Callable[[int], None] | None = None,
    grid: Sequence[float] = C_GRID,
) -> dict[str, Any]:
    """Patch-level linear segmentation: test mIoU per block (C chosen on val mIoU), patch accuracy, class shares.

    Returns:
        {"task", "n", "test_class_share", "blocks", "test_pred" (last block, per test patch), "test_true",
        "test_units" (each test patch's bootstrap unit: its tile's spatial block)}.

    Note:
        At most `MAX_SEG_TRAIN_PATCHES` training patches (seeded subsample); val and test use every patch.
    """
    idx = limit_splits(probe_set, limit, seed)
    order = np.concatenate([idx[s] for s in SPLITS])
    images = [probe_set.images[i] for i in order]
    feats = block_features(encoder, processor, images, input_size, blocks, _patch_normalised, batch_size, progress)
    label_grid = probe_set.labels.shape[1:]  # (not `grid`: that is the C grid)
    first = next(iter(feats.values()))
    if tuple(first.shape[1:3]) != tuple(label_grid):
        raise ValueError(
            f"patch grid {tuple(first.shape[1:3])} != label grid {tuple(label_grid)} (input size mismatch)"
        )
    bounds = np.cumsum([0] + [len(idx[s]) for s in SPLITS])
    y = {s: probe_set.labels[idx[s]].reshape(-1) for s in SPLITS}
    keep = segmentation_keep(len(y["train"]), seed)
    y_fit = {"train": y["train"][keep], "val": y["val"], "test": y["test"]}
    results, fits = {}, {}
    k = len(probe_set.class_names)
    for b, f in feats.items():
        flat = {s: f[bounds[i] : bounds[i + 1]].reshape(-1, f.shape[-1]).float().numpy() for i, s in enumerate(SPLITS)}
        flat["train"] = flat["train"][keep]
        fits[b] = fit_probe(flat, y_fit, metric="miou", num_classes=k, grid=grid, seed=seed)
        results[b] = fits[b].as_dict()
    shares = {name: float(np.mean(y["test"] == c)) for c, name in enumerate(probe_set.class_names)}
    patches = int(np.prod(label_grid))
    return {
        "task": probe_set.name,
        "n": {s: int(len(idx[s])) for s in SPLITS},
        "test_class_share": shares,
        "blocks": results,
        "test_pred": fits[max(fits)].test_pred.tolist(),
        "test_true": y["test"].tolist(),
        "test_units": np.repeat(probe_set.unit()[idx["test"]], patches).tolist(),  # each patch: its tile's block
    }
