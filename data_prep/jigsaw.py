"""Jigsaw puzzles from any data_prep parquet or an image folder (the novel task of arXiv 2506.23508).

    python -m data_prep jigsaw --source data/s2_tiles/train.parquet --source data/s2_tiles/test.parquet \
        --out data/jigsaw3 --grid 3 --tile 112 --seed 0
    python -m data_prep jigsaw --source ~/photos --out data/jigsaw2 --grid 2 --split-ratio 0.8,0,0.2

Each source image is centre-cropped to a square and resized to grid · tile pixels (tile a multiple of 28, the
puzzle inside the processor's pixel limits: `verl_ext.jigsaw.check_geometry`), cut into grid × grid tiles and
shuffled with a seeded permutation that is never the identity. The row is in data_prep's schema
(`data_prep.schema.ARROW_SCHEMA`): the shuffled image; a prompt that explains the answer format;
`reward_model.ground_truth` = the answer (n lines of n 1-indexed positions, `verl_ext.jigsaw.answer_text`);
`extra_info.transforms = []` (a rotation or flip changes the answer, so no transform is allowed);
`extra_info.source_path` = where the image came from. Images whose tiles are near-identical
(`verl_ext.jigsaw.min_tile_distance` < --min-tile-diff: sea, sky) are rejected and counted.
Outputs: one parquet per parquet source (same file name), or train/val/test.parquet for an image folder; report.json.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from data_prep.prompts import FORMAT_INSTRUCTION
from data_prep.report import DataPrepError, Report, dumps
from data_prep.source import is_image_name
from data_prep.splits import SPLITS, parse_ratio, stratified_split
from data_prep.writer import OutputDir, RowGroupWriter
from verl_ext.jigsaw import (
    QWEN25VL_MAX_PIXELS,
    QWEN25VL_MIN_PIXELS,
    answer_text,
    check_geometry,
    draw_permutation,
    ground_truth_answer,
    min_tile_distance,
    shuffle_tiles,
)

DOMAIN = "novel_task"
ABILITY = "jigsaw_puzzle"
PROMPT_STYLES = ("plain", "varied")
# Opening sentences; `varied` draws one per row (seeded), `plain` always uses the first. The answer rule is shared.
OPENINGS = (
    "This image is a jigsaw puzzle: it was cut into a {n}x{n} grid of tiles and the tiles were shuffled.",
    "The picture was divided into {n}x{n} equal square pieces, which were then put back in a random order.",
    "Here is a scrambled image: its {n}x{n} tiles have been moved to random positions.",
    "Solve this {n}x{n} jigsaw puzzle: the tiles of the image were shuffled and must be put back in place.",
)
ANSWER_RULE = (
    "Positions are numbered row by row, left to right, starting from 1:\n```\n{grid}\n```\n"
    "For each position of the shuffled image, give the number of the position where the tile shown there belongs in "
    "the original image. The answer is {n} lines of {n} numbers separated by spaces, each number from 1 to {nn} "
    "used exactly once."
)


def question_text(grid: int, style: str = "plain", key: int = 0, seed: int = 0) -> str:
    """The prompt after the `<image>` placeholder: the task, the position grid, the answer rule and the format."""
    if style not in PROMPT_STYLES:
        raise ValueError(f"prompt style must be one of {PROMPT_STYLES}, got {style!r}")
    pick = 0
    if style == "varied":
        pick = hashlib.sha256(f"prompt:{seed}:{key}".encode()).digest()[0] % len(OPENINGS)
    positions = answer_text(list(range(1, grid * grid + 1)), grid)
    rule = ANSWER_RULE.format(grid=positions, n=grid, nn=grid * grid)
    return "\n".join([OPENINGS[pick].format(n=grid), rule, FORMAT_INSTRUCTION])


def square_puzzle_image(image: Image.Image, side: int) -> tuple[np.ndarray, bool]:
    """Centre-crop to a square and resize to `side` (bicubic); returns (uint8 array (side, side, 3), resized?)."""
    rgb = image.convert("RGB")
    short = min(rgb.size)
    left, top = (rgb.width - short) // 2, (rgb.height - short) // 2
    crop = rgb.crop((left, top, left + short, top + short))
    if short == side:
        return np.asarray(crop), False
    return np.asarray(crop.resize((side, side), Image.Resampling.BICUBIC)), True


def jigsaw_row(
    *,
    shuffled_png: bytes,
    answer: list[int],
    grid: int,
    question: str,
    prompt_style: str,
    split: str,
    index: int,
    dataset: str,
    source_path: str,
) -> dict[str, Any]:
    """One row in data_prep's schema (the columns of `make_row`, with the puzzle's ground truth and no transform)."""
    return {
        "data_source": f"jigsaw_{grid}x{grid}",
        "prompt": [{"role": "user", "content": "<image>" + question}],
        "images": [{"bytes": shuffled_png, "path": None}],
        "ability": ABILITY,
        "reward_model": {"style": "rule", "ground_truth": answer_text(answer, grid)},
        "extra_info": {
            "split": split,
            "index": int(index),
            "dataset": dataset,
            "domain": DOMAIN,
            "label_id": -1,
            "label_ids": [],
            "class_names": [],
            "multi_label": False,
            "transforms": [],  # any rotation or flip changes the answer
            "prompt_variant": prompt_style,
            "source_path": source_path,
        },
    }


def parquet_images(path: Path, limit: int | None) -> Iterator[tuple[bytes, str, str, str]]:
    """(image bytes, split, dataset, source_path) of each row of a data_prep parquet (first image of the row)."""
    table = pq.read_table(path, columns=["images", "extra_info", "data_source"])
    rows = table.to_pylist()[:limit] if limit else table.to_pylist()
    for i, row in enumerate(rows):
        extra = row.get("extra_info") or {}
        dataset = str(extra.get("dataset") or row.get("data_source") or path.stem)
        where = f"{path.name}[{i}]" + (f":{extra['source_path']}" if extra.get("source_path") else "")
        yield row["images"][0]["bytes"], str(extra.get("split") or path.stem), dataset, where


def folder_images(root: Path, ratio: tuple[float, float, float], seed: int) -> dict[str, list[Path]]:
    """An image folder's files (recursive, sorted), split by a seeded `ratio` (train, val, test)."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and is_image_name(p.name))
    if not files:
        raise DataPrepError(f"no image files under {root}")
    names = stratified_split([0] * len(files), 1, ratio, seed)
    return {s: [f for f, n in zip(files, names) if n == s] for s in SPLITS}


class _Converter:
    """Builds puzzles one image at a time and writes them; counts rejections and errors."""

    def __init__(self, args: argparse.Namespace, report: Report) -> None:
        self.args, self.report = args, report
        self.side = check_geometry(args.grid, args.tile, args.min_pixels, args.max_pixels)
        self.rejected: Counter[str] = Counter()
        self.rejected_examples: list[str] = []
        self.resized = 0
        self.next_index = 0

    def write(self, path: Path, items: Iterator[tuple[bytes, str, str, str]], total: int) -> int:
        args, count = self.args, 0
        writer = RowGroupWriter(path, args.row_group_rows)
        try:
            for data, split, dataset, where in tqdm(items, total=total, desc=path.stem, disable=args.no_progress):
                row = self.puzzle(data, split, dataset, where)
                if row is not None:
                    writer.add(row)
                    count += 1
        finally:
            writer.close()
        return count

    def puzzle(self, data: bytes, split: str, dataset: str, where: str) -> dict[str, Any] | None:
        args = self.args
        try:
            with Image.open(io.BytesIO(data)) as im:
                pixels, resized = square_puzzle_image(im, self.side)
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
            self.report.issue("corrupt_image", where, f"{type(exc).__name__}: {exc}")
            return None
        distance = min_tile_distance(pixels, args.grid)
        if distance < args.min_tile_diff:
            self.rejected["near_identical_tiles"] += 1
            if len(self.rejected_examples) < 50:
                self.rejected_examples.append(f"{where} (min tile difference {distance:.2f})")
            return None
        self.resized += int(resized)
        index = self.next_index
        self.next_index += 1
        perm = draw_permutation(args.grid * args.grid, args.seed, index)
        buffer = io.BytesIO()
        Image.fromarray(shuffle_tiles(pixels, args.grid, perm)).save(buffer, format="PNG")
        return jigsaw_row(
            shuffled_png=buffer.getvalue(),
            answer=ground_truth_answer(perm),
            grid=args.grid,
            question=question_text(args.grid, args.prompt, index, args.seed),
            prompt_style=args.prompt,
            split=split,
            index=index,
            dataset=dataset,
            source_path=where,
        )


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `jigsaw` subcommand's options."""
    p.add_argument("--source", action="append", required=True, type=Path, help="data_prep parquet or image folder")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--grid", type=int, default=3, help="n: an n x n puzzle (2, 3, ...; paper: 3)")
    p.add_argument("--tile", type=int, default=112, help="tile side in px, a multiple of 28 (112)")
    p.add_argument("--seed", type=int, default=0, help="seed of the permutations, prompt wording and folder split")
    p.add_argument("--prompt", choices=PROMPT_STYLES, default="plain", help="one wording, or varied per row")
    p.add_argument("--min-tile-diff", type=float, default=6.0, help="reject below this tile difference (6.0)")
    p.add_argument("--min-pixels", type=int, default=QWEN25VL_MIN_PIXELS, help="processor min_pixels")
    p.add_argument("--max-pixels", type=int, default=QWEN25VL_MAX_PIXELS, help="processor max_pixels")
    p.add_argument("--split-ratio", type=parse_ratio, default=parse_ratio("0.8,0,0.2"), help="image folders")
    p.add_argument("--limit", type=int, default=None, help="first N images of each parquet source")
    p.add_argument("--on-error", choices=("fail", "skip"), default="fail", help="stop on bad images, or count")
    p.add_argument("--row-group-rows", type=int, default=256, help="rows per parquet row group")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Convert every source; returns (and writes) the report."""
    try:
        converter = _Converter(args, Report(args.on_error))
    except ValueError as exc:
        raise DataPrepError(str(exc)) from None
    out, files, start = OutputDir(args.out), {}, time.perf_counter()
    try:
        for source in args.source:
            if source.is_dir():
                for split, paths in folder_images(source, args.split_ratio, args.seed).items():
                    if paths:
                        items = ((p.read_bytes(), split, source.name, str(p.relative_to(source))) for p in paths)
                        files[f"{split}.parquet"] = converter.write(out.path(f"{split}.parquet"), items, len(paths))
            elif source.suffix == ".parquet" and source.is_file():
                name = source.name
                if name in files:
                    raise DataPrepError(f"two sources would write {name}; give them different file names")
                total = pq.ParquetFile(source).metadata.num_rows
                items = parquet_images(source, args.limit)
                files[name] = converter.write(out.path(name), items, min(total, args.limit or total))
            else:
                raise DataPrepError(f"--source {source}: not a .parquet file or an image folder")
        report = {
            "dataset": "jigsaw",
            "grid": args.grid,
            "tile": args.tile,
            "side": converter.side,
            "seed": args.seed,
            "prompt": args.prompt,
            "min_tile_diff": args.min_tile_diff,
            "sources": [str(s) for s in args.source],
            "files": {name: {"rows": n} for name, n in files.items()},
            "rejected": {
                "total": sum(converter.rejected.values()),
                "by_reason": dict(converter.rejected),
                "examples": converter.rejected_examples,
            },
            "resized": converter.resized,
            **converter.report.to_dict(),
        }
        out.write_text("report.json", dumps(report))
        out.commit()
    except BaseException:
        out.abort()
        raise
    rows = ", ".join(f"{n} ({r})" for n, r in files.items())
    print(
        f"jigsaw {args.grid}x{args.grid}: wrote {rows} to {args.out} in {time.perf_counter() - start:.1f} s; "
        f"rejected {report['rejected']['total']} images with near-identical tiles"
    )
    return report
