"""A user's multiple-choice VQA parquet (MMStar / MMBench style) -> data_prep rows, scored like any classification set.

    python -m data_prep mcq --source MMStar/mmstar.parquet --out data/mmstar --name mmstar

Columns read: `question` (text; MMStar puts the options in it: "...\\nOptions: A: ..., B: ..."), `answer` (the option
letter), the image in `image` (a {bytes, path} struct as the Hugging Face parquet export writes it, or raw bytes), and
optional option columns `A`..`Z` (MMBench style, appended to the question as "A. text" lines; up to 26 options). The
answer vocabulary is the option letters (those present as columns, else the run A, B, C, ... named in the question as
"X:"/"X."/"X)", else A-D), so the reward and the evaluation accept exactly one letter. Nothing is downloaded: the
file is the user's. No transform is whitelisted (a rotated chart or text changes the answer), only the identity.
"""

from __future__ import annotations

import argparse
import re
import string
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from data_prep.images import encode_image_bytes
from data_prep.prompts import FORMAT_INSTRUCTION
from data_prep.report import DataPrepError, Report, dumps
from data_prep.schema import make_row
from data_prep.writer import OutputDir, RowGroupWriter

DOMAIN = "general"
LETTERS = tuple(string.ascii_uppercase)  # up to 26 options
_OPTION_IN_TEXT = re.compile(r"(?:^|[\s,(])([A-Z])\s*[:.)]\s")


def option_letters(row: dict[str, Any], columns: list[str]) -> list[str]:
    """The row's option letters: option columns with a value, else letters named in the question, else A-D."""
    cols = [c for c in LETTERS if c in columns and row.get(c) not in (None, "") and str(row.get(c)) != "nan"]
    if cols:
        return cols
    found = set(_OPTION_IN_TEXT.findall(str(row.get("question", ""))))
    run = []  # A, B, C, ... while present: a stray "I." or "X:" in the text never adds a letter
    for letter in LETTERS:
        if letter not in found:
            break
        run.append(letter)
    return run if len(run) >= 2 else list(LETTERS[:4])


def question_text(row: dict[str, Any], letters: list[str], columns: list[str]) -> str:
    """The question (+ option columns), the letter rule and the think/answer format."""
    parts = [str(row["question"]).strip()]
    parts += [f"{c}. {row[c]}" for c in letters if c in columns]
    parts.append(f"Answer with the letter of the correct option only ({', '.join(letters)}). " + FORMAT_INSTRUCTION)
    return "\n".join(parts)


def image_bytes(value: Any) -> bytes | None:
    """The encoded image of an `image` cell: a {bytes, path} struct, raw bytes, or None."""
    if isinstance(value, dict):
        value = value.get("bytes")
    return bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) else None


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `mcq` subcommand's options."""
    p.add_argument("--source", required=True, type=Path, help="the multiple-choice parquet")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--name", default="mcq", help="dataset name (data_source), e.g. mmstar")
    p.add_argument("--split", default="test", help="split name of the rows and the output file (test)")
    p.add_argument("--image-column", default="image")
    p.add_argument("--limit", type=int, default=None, help="first N rows only")
    p.add_argument("--min-size", type=int, default=56, help="nearest-neighbour upscale of smaller images (56)")
    p.add_argument("--on-error", choices=("fail", "skip"), default="fail")
    p.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Convert the file; returns (and writes) the report."""
    if not args.source.is_file():
        raise DataPrepError(f"--source {args.source}: no such file")
    table = pq.read_table(args.source)
    columns = table.column_names
    missing = [c for c in ("question", "answer", args.image_column) if c not in columns]
    if missing:
        raise DataPrepError(f"{args.source}: missing column(s) {missing}; found {columns}")
    report, out, start = Report(args.on_error), OutputDir(args.out), time.perf_counter()
    try:
        name = f"{args.split}.parquet"
        writer = RowGroupWriter(out.path(name), 256)
        rows = table.to_pylist()
        for pos, row in enumerate(rows[: args.limit] if args.limit else rows):
            where = f"{args.source.name}[{pos}]"
            letters = option_letters(row, columns)
            answer = str(row["answer"]).strip().upper()
            if answer not in letters:
                report.issue("label_out_of_range", where, f"answer {row['answer']!r} is not one of {letters}")
                continue
            data = image_bytes(row[args.image_column])
            enc = encode_image_bytes(data, args.min_size) if data else None
            if enc is None or enc.data is None:
                report.issue("corrupt_image", where, enc.error if enc else "no image bytes")
                continue
            report.add_image(enc.conversions, enc.width, enc.height)
            writer.add(
                make_row(
                    data_source=args.name,
                    question=question_text(row, letters, columns),
                    image_bytes=enc.data,
                    image_path=None,
                    domain=DOMAIN,
                    label_ids=[letters.index(answer)],
                    class_names=letters,
                    multi_label=False,
                    transforms=("identity",),
                    prompt_variant="plain",
                    split=args.split,
                    index=int(row.get("index", pos)) if str(row.get("index", "")).isdigit() else pos,
                    source_path=where,
                )
            )
        writer.close()
        result = {
            "dataset": args.name,
            "domain": DOMAIN,
            "source": str(args.source),
            "files": {name: {"rows": writer.count}},
            **report.to_dict(),
        }
        out.write_text("report.json", dumps(result))
        out.commit()
    except BaseException:
        out.abort()
        raise
    print(f"{args.name}: wrote {name} ({writer.count}) to {args.out} in {time.perf_counter() - start:.1f} s")
    return result
