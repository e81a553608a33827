"""Tiny data_prep-schema parquet rows for the evaluation tests (built here, not by data_prep)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

UCM_VOCAB = ["beach", "forest", "river"]


def png_bytes(seed: int, size: tuple[int, int] = (84, 56)) -> bytes:
    """A random RGB PNG of `size` (width, height); non-square so rot90 changes the patch grid."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def make_row(index: int, label: str, vocab: list[str], transforms: list[str] | None, source: str = "ucm") -> dict:
    """One row in the data_prep schema."""
    multi = source == "medmnist/chestmnist"
    return {
        "data_source": source,
        "prompt": [{"role": "user", "content": "<image>Which scene is this? Answer with one class name."}],
        "images": [{"bytes": png_bytes(index), "path": f"img{index}.png"}],
        "reward_model": {"style": "rule", "ground_truth": label},
        "extra_info": {
            "split": "test",
            "index": index,
            "dataset": source,
            "domain": "remote_sensing",
            "label_id": -1 if multi else vocab.index(label),
            "label_ids": [vocab.index(x) for x in label.split("; ") if x in vocab],
            "class_names": vocab,
            "multi_label": multi,
            "transforms": transforms,
            "prompt_variant": "default",
            "source_path": f"img{index}.png",
        },
    }


def write_rows(path: Path, rows: list[dict]) -> Path:
    """Write rows to a parquet file."""
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path
