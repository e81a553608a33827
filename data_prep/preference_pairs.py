"""Preference pairs for DPO (`recipe/pivot`): a chosen and a rejected response per image + prompt, in verl's parquet.

    python -m data_prep preference-pairs --pairs my_pairs.jsonl --image-root ~/data/imgs --out data/pairs
    python -m data_prep preference-pairs --from-rows data/s2_tiles/train.parquet --out data/s2_pairs --seed 0

Two sources:

* `--pairs FILE` (.parquet or .jsonl): a preference set the user brings (e.g. converted from MMPR). Columns:
  `image` (encoded bytes, {"bytes", "path"}, or a path relative to `--image-root`), `question` (or `prompt`), `chosen`,
  `rejected`; optional `label` (the reward's ground truth; metrics only) and `class_names` (list). The question gets a
  leading `<image>` placeholder unless it holds exactly one already.
* `--from-rows FILE`: a classification parquet written by `python -m data_prep <dataset>`; chosen =
  `<think>The image shows {label}.</think><answer>{label}</answer>` (the SFT target, `data_prep.sft`),
  rejected = the same with a wrong class of the row's vocabulary drawn per row (seeded). Multi-label rows are refused.

Output (`--out` folder, written atomically): `pairs.parquet` = the data_prep row schema (`data_prep/schema.py`, read
by verl's `RLHFDataset`) + the string columns `chosen` and `rejected`, and `report.json`. Schema check on every row:
one image that decodes, exactly one `<image>` in the prompt, non-empty chosen and rejected texts that differ; a bad
row stops the run (`--on-error fail`, one-line error naming the row) or is skipped and counted (`skip`).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from data_prep.images import encode_image_bytes
from data_prep.report import REASONS, DataPrepError, Report, dumps
from data_prep.schema import ARROW_SCHEMA, IMAGE_PLACEHOLDER
from data_prep.writer import OutputDir

COMMAND = "preference-pairs"
OUTPUT = "pairs.parquet"
CHOSEN, REJECTED = "chosen", "rejected"
PAIR_SCHEMA = ARROW_SCHEMA.append(pa.field(CHOSEN, pa.string())).append(pa.field(REJECTED, pa.string()))
# Issue reasons of this converter, added to the shared table (data_prep/report.py) so Report counts them.
PAIR_REASONS = {
    "empty_response": "preference row whose chosen or rejected text is empty",
    "same_response": "preference row whose chosen and rejected texts are identical (no preference)",
    "bad_prompt": "preference row whose prompt is missing or has more than one <image> placeholder",
    "missing_image": "preference row without an image, or whose image path does not exist",
    "no_wrong_class": "classification row with a multi-label target or fewer than two classes (no wrong answer)",
}
REASONS.update(PAIR_REASONS)


def check_texts(chosen: Any, rejected: Any) -> str | None:
    """The issue reason of a chosen/rejected pair of texts, or None when it is usable."""
    if not isinstance(chosen, str) or not isinstance(rejected, str) or not chosen.strip() or not rejected.strip():
        return "empty_response"
    if chosen == rejected:
        return "same_response"
    return None


def prompt_messages(question: Any) -> list[dict[str, str]] | None:
    """`[{"role": "user", "content": "<image>" + question}]`, or None when the question is unusable."""
    if not isinstance(question, str) or not question.strip():
        return None
    count = question.count(IMAGE_PLACEHOLDER)
    if count > 1:
        return None
    return [{"role": "user", "content": question if count == 1 else IMAGE_PLACEHOLDER + question}]


def _image_bytes(value: Any, image_root: Path | None) -> tuple[bytes | None, str | None]:
    """(encoded bytes, source path) of an `image` cell: bytes, {"bytes", "path"}, or a path under `image_root`."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return bytes(value["bytes"]), value.get("path")
        value = value.get("path")
    if isinstance(value, bytes | bytearray):
        return bytes(value), None
    if isinstance(value, str) and value:
        path = Path(value) if image_root is None else image_root / value
        if image_root is not None and not path.resolve().is_relative_to(image_root.resolve()):
            return None, value  # never read outside the image root
        if path.is_file():
            return path.read_bytes(), value
    return None, value if isinstance(value, str) else None


def user_pair_rows(
    records: Iterable[dict[str, Any]], name: str, image_root: Path | None, report: Report, min_size: int
):
    """Rows of the output schema from a user's preference records (bad records raise or are counted)."""
    for i, rec in enumerate(records):
        where = f"record {i}"
        reason = check_texts(rec.get(CHOSEN), rec.get(REJECTED))
        if reason:
            report.issue(reason, where)
            continue
        messages = prompt_messages(rec.get("question", rec.get("prompt")))
        if messages is None:
            report.issue("bad_prompt", where)
            continue
        data, source = _image_bytes(rec.get("image", rec.get("images")), image_root)
        if data is None:
            report.issue("missing_image", where, str(source or ""))
            continue
        encoded = encode_image_bytes(data, min_size)
        if encoded.data is None:
            report.issue(encoded.error_kind, where, encoded.error)
            continue
        report.add_image(encoded.conversions, encoded.width, encoded.height)
        label = "" if rec.get("label") is None else str(rec["label"])
        classes = [str(c) for c in (rec.get("class_names") or [])]
        yield {
            "data_source": name,
            "prompt": messages,
            "images": [{"bytes": encoded.data, "path": source}],
            "ability": "preference",
            "reward_model": {"style": "rule", "ground_truth": label},
            "extra_info": {
                "split": "train",
                "index": i,
                "dataset": name,
                "domain": "",
                "label_id": classes.index(label) if label in classes else -1,
                "label_ids": [classes.index(label)] if label in classes else [],
                "class_names": classes,
                "multi_label": False,
                "transforms": ["identity"],
                "prompt_variant": "plain",
                "source_path": str(source or where),
            },
            CHOSEN: rec[CHOSEN],
            REJECTED: rec[REJECTED],
        }


def label_pair_rows(rows: Iterable[dict[str, Any]], seed: int, think: str, report: Report) -> Iterator[dict[str, Any]]:
    """Rows of a classification parquet with chosen = the label's answer and rejected = a wrong class's answer."""
    from data_prep.sft import answer_text  # the SFT target: one definition of the answer text

    for i, row in enumerate(rows):
        info = row.get("extra_info") or {}
        classes = list(info.get("class_names") or [])
        label = str((row.get("reward_model") or {}).get("ground_truth", ""))
        wrong = [c for c in classes if c != label]
        if info.get("multi_label") or label not in classes or not wrong:
            report.issue("no_wrong_class", f"row {i}", f"label {label!r}, {len(classes)} classes")
            continue
        rng = random.Random(f"{seed}:{info.get('index', i)}")
        yield {**row, CHOSEN: answer_text(label, think), REJECTED: answer_text(rng.choice(wrong), think)}


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a .parquet or .jsonl file (JSON only: nothing in the file is executed)."""
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    if path.suffix in (".jsonl", ".json"):
        text = path.read_text(encoding="utf-8")
        try:
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise DataPrepError(f"{path}: not JSON lines ({exc})") from None
    raise DataPrepError(f"{path}: expected a .parquet or .jsonl file")


def convert(args: argparse.Namespace) -> dict[str, Any]:
    """Run the converter; returns the report (also written as report.json)."""
    report = Report(args.on_error)
    source = Path(args.pairs or args.from_rows).expanduser()
    if not source.is_file():
        raise DataPrepError(f"{source}: no such file")
    records = read_records(source)
    if args.pairs:
        root = Path(args.image_root).expanduser() if args.image_root else None
        rows = list(user_pair_rows(records, args.name, root, report, args.min_size))
    else:
        rows = list(label_pair_rows(records, args.seed, args.think, report))
    if not rows:
        raise DataPrepError(f"{source}: no usable preference row (see --on-error skip and report.json)")
    out = OutputDir(args.out)
    try:
        pq.write_table(pa.Table.from_pylist(rows, schema=PAIR_SCHEMA), out.path(OUTPUT))
        result = {"dataset": args.name if args.pairs else "pairs_from_labels", "source": str(source)}
        result |= {"rows": len(rows), "read": len(records), **report.to_dict()}
        out.write_text("report.json", dumps(result))
        out.commit()
    except BaseException:
        out.abort()
        raise
    return result


def add_subparser(sub: Any) -> None:
    """Register `preference-pairs` in `python -m data_prep`'s subcommands."""
    p = sub.add_parser(COMMAND, help="chosen/rejected pairs per image + prompt for DPO (recipe/pivot)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pairs", help="user preference set (.parquet/.jsonl: image, question, chosen, rejected)")
    src.add_argument("--from-rows", help="a data_prep classification parquet: label-derived pairs")
    p.add_argument("--out", required=True, type=Path, help="output folder (pairs.parquet + report.json)")
    p.add_argument("--image-root", default=None, help="--pairs: folder that relative image paths are under")
    p.add_argument("--name", default="pairs", help="--pairs: data_source of the rows")
    p.add_argument("--seed", type=int, default=0, help="--from-rows: seed of the wrong-class draw")
    p.add_argument("--think", default="The image shows {label}.", help="--from-rows: <think> text ({label})")
    p.add_argument("--min-size", type=int, default=56, help="upscale images whose short side is below this (56)")
    p.add_argument("--on-error", choices=("fail", "skip"), default="fail", help="stop on a bad row, or skip and count")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Convert and print a one-line summary."""
    start = time.perf_counter()
    report = convert(args)
    skipped = report["skipped"]["total"]
    took = time.perf_counter() - start
    print(f"{COMMAND}: wrote {report['rows']} rows to {args.out / OUTPUT} in {took:.1f} s; skipped {skipped}")
    return report
