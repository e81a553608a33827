"""A user's RefCOCO-style grounding parquet (image, referring expression, box) -> data_prep rows: a prior task of the
novel-task study (the paper's largest drop, RefCOCO −57.2 after answer-only SFT).

    python -m data_prep grounding --source refcoco_val.parquet --out data/refcoco --name refcoco [--box-format xywh]

Columns read: the image (`--image-column`, default `image`: a {bytes, path} struct as the Hugging Face parquet export
writes it, or raw bytes), the expression (`--expression-column`, default `expression`; a list of sentences gives one
row per sentence with `--all-sentences`, else the first), the box (`--box-column`, default `bbox`: four numbers,
`--box-format xywh` = COCO/RefCOCO's [x, y, width, height] in source pixels, or `xyxy`). Nothing is downloaded.

Qwen2.5-VL answers boxes in the pixel frame of the image it is shown, after its processor's resize to multiples of
28 px inside its pixel limits. The converter therefore resizes each image to exactly that size itself (`qwen_size`,
the processor's rounding) and scales the box with it, so the processor keeps the image as is and the ground truth is
in the frame the model sees; the prompt states the size. Ground truth: "[x1, y1, x2, y2]" (integers, that frame);
scored by IoU (`verl_ext.evaluation.grounding`). `data_source` = `grounding_<name>`: the forgetting harness scores
such rows by IoU. No transform is whitelisted (a flip moves the box).
"""

from __future__ import annotations

import argparse
import io
import math
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from data_prep.multiple_choice import image_bytes
from data_prep.prompts import FORMAT_INSTRUCTION
from data_prep.report import DataPrepError, Report, dumps
from data_prep.schema import make_row
from data_prep.writer import OutputDir, RowGroupWriter

DOMAIN = "general"
PREFIX = "grounding_"
FACTOR = 28  # Qwen2.5-VL: 14-px patches merged 2 x 2
MIN_PIXELS, MAX_PIXELS = 4 * 28 * 28, 1280 * 28 * 28  # a common grounding budget (the processor's max is larger)


def qwen_size(width: int, height: int, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """(width, height) Qwen2.5-VL's processor resizes an image to: sides rounded to multiples of 28, pixels within
    [min_pixels, max_pixels] at the same aspect ratio (transformers' `smart_resize`, written out: no torch here)."""
    h = max(FACTOR, round(height / FACTOR) * FACTOR)
    w = max(FACTOR, round(width / FACTOR) * FACTOR)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(FACTOR, math.floor(height / beta / FACTOR) * FACTOR)
        w = max(FACTOR, math.floor(width / beta / FACTOR) * FACTOR)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / FACTOR) * FACTOR, math.ceil(width * beta / FACTOR) * FACTOR
    return w, h


def scaled_box(box: list[float], box_format: str, src: tuple[int, int], dst: tuple[int, int]) -> list[int] | str:
    """The box as integer [x1, y1, x2, y2] in the resized frame, or the reason it is unusable (a str)."""
    if len(box) != 4 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in box):
        return f"box {box!r} is not four finite numbers"
    x1, y1, a, b = (float(v) for v in box)
    x2, y2 = (x1 + a, y1 + b) if box_format == "xywh" else (a, b)
    if not (x2 > x1 and y2 > y1):
        return f"box {box!r} ({box_format}) has no area"
    if x1 < -1 or y1 < -1 or x2 > src[0] + 1 or y2 > src[1] + 1:
        return f"box {box!r} ({box_format}) lies outside the {src[0]} x {src[1]} image"
    sx, sy = dst[0] / src[0], dst[1] / src[1]
    out = [round(max(0.0, x1) * sx), round(max(0.0, y1) * sy), round(min(x2, src[0]) * sx), round(min(y2, src[1]) * sy)]
    return out


def question_text(expression: str, size: tuple[int, int]) -> str:
    return (
        f'Locate the object described as: "{expression.strip()}". Give its bounding box as [x1, y1, x2, y2] in '
        f"pixel coordinates of this {size[0]} x {size[1]} image (x to the right, y down). " + FORMAT_INSTRUCTION
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `grounding` subcommand's options."""
    p.add_argument("--source", required=True, type=Path, help="the grounding parquet (image, expression, box)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--name", default="refcoco", help="dataset name; data_source = grounding_<name>")
    p.add_argument("--split", default="test", help="split name of the rows and the output file (test)")
    p.add_argument("--image-column", default="image")
    p.add_argument("--expression-column", default="expression")
    p.add_argument("--box-column", default="bbox")
    p.add_argument("--box-format", choices=("xywh", "xyxy"), default="xywh", help="xywh: COCO / RefCOCO")
    p.add_argument("--all-sentences", action="store_true", help="one row per sentence of a list-valued expression")
    p.add_argument("--max-pixels", type=int, default=MAX_PIXELS, help="pixel budget of the resized image")
    p.add_argument("--limit", type=int, default=None, help="first N source rows only")
    p.add_argument("--on-error", choices=("fail", "skip"), default="fail")
    p.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Convert the file; returns (and writes) the report."""
    from PIL import Image

    if not args.source.is_file():
        raise DataPrepError(f"--source {args.source}: no such file")
    table = pq.read_table(args.source)
    needed = [args.image_column, args.expression_column, args.box_column]
    missing = [c for c in needed if c not in table.column_names]
    if missing:
        raise DataPrepError(f"{args.source}: missing column(s) {missing}; found {table.column_names}")
    report, out, start = Report(args.on_error), OutputDir(args.out), time.perf_counter()
    name, index = f"{args.split}.parquet", 0
    try:
        writer = RowGroupWriter(out.path(name), 256)
        rows = table.select(needed).to_pylist()
        for pos, row in enumerate(rows[: args.limit] if args.limit else rows):
            where = f"{args.source.name}[{pos}]"
            data = image_bytes(row[args.image_column])
            try:
                image = Image.open(io.BytesIO(data)).convert("RGB") if data else None
            except Exception as err:  # noqa: BLE001 - any decoder error is a corrupt image
                report.issue("corrupt_image", where, str(err)[:120])
                continue
            if image is None:
                report.issue("corrupt_image", where, "no image bytes")
                continue
            size = qwen_size(*image.size, max_pixels=args.max_pixels)
            box = scaled_box(list(row[args.box_column] or []), args.box_format, image.size, size)
            if isinstance(box, str):
                report.issue("label_out_of_range", where, box)
                continue
            expressions = row[args.expression_column]
            expressions = [expressions] if isinstance(expressions, str) else list(expressions or [])
            expressions = [e for e in expressions if isinstance(e, str) and e.strip()]
            if not expressions:
                report.issue("unlabeled", where, "empty referring expression")
                continue
            buf = io.BytesIO()
            image.resize(size, Image.BICUBIC).save(buf, format="PNG")
            report.add_image((), size[0], size[1])
            truth = "[" + ", ".join(str(v) for v in box) + "]"
            for expression in expressions if args.all_sentences else expressions[:1]:
                writer.add(
                    make_row(
                        data_source=PREFIX + args.name,
                        question=question_text(expression, size),
                        image_bytes=buf.getvalue(),
                        image_path=None,
                        domain=DOMAIN,
                        label_ids=[0],
                        class_names=[truth],
                        multi_label=False,
                        transforms=("identity",),
                        prompt_variant="plain",
                        split=args.split,
                        index=index,
                        source_path=where,
                    )
                )
                index += 1
        writer.close()
        result = {
            "dataset": PREFIX + args.name,
            "domain": DOMAIN,
            "source": str(args.source),
            "box_format": args.box_format,
            "files": {name: {"rows": writer.count}},
            **report.to_dict(),
        }
        out.write_text("report.json", dumps(result))
        out.commit()
    except BaseException:
        out.abort()
        raise
    print(f"{PREFIX}{args.name}: wrote {name} ({writer.count}) to {args.out} in {time.perf_counter() - start:.1f} s")
    return result
