"""easy-VQA (PyPI `easy-vqa` 1.0, MIT licence) -> data_prep rows: a small general VQA set that ships in a package.

    pip install easy-vqa==1.0
    python -m data_prep easy-vqa --out data/easy_vqa --per-image 1 --max-rows 500 --seed 0

5,000 64 x 64 PNGs (4,000 train, 1,000 test) of one coloured shape, with questions about its colour, its shape or
yes/no ("does the image contain a red shape?"); 13 answers (yes/no, 8 colours, 3 shapes), the answer vocabulary of
every row (`extra_info.class_names`), so `verl_ext.rewards` and `verl_ext.evaluation` score it like any other
classification set. The package's files are read without importing it. Images are upscaled by the smallest integer
factor reaching --min-size with nearest neighbour (64 -> 128 px by default; data_prep's policy: no invented values).
Every rotation and flip keeps the answer (colour, shape class, presence), so the whitelist holds all of them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from data_prep.images import encode_image_bytes
from data_prep.prompts import FORMAT_INSTRUCTION, class_list_text
from data_prep.report import DataPrepError, Report, dumps
from data_prep.schema import make_row
from data_prep.whitelist import ALL as TRANSFORMS  # the square's symmetries: colour and shape answers keep
from data_prep.writer import OutputDir, RowGroupWriter

NAME = "easy_vqa"
DOMAIN = "general"
SPLIT_FILES = {"train": "train", "test": "test"}


def package_data_dir() -> Path:
    """The `data` folder of the installed easy-vqa package (found without importing it)."""
    spec = importlib.util.find_spec("easy_vqa")
    if spec is None or not spec.submodule_search_locations:
        raise DataPrepError("easy-vqa is not installed (pip install easy-vqa==1.0)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def question_text(question: str, answers: list[str]) -> str:
    """The prompt after `<image>`: the question, the answer list and the think/answer format."""
    q = question.strip()
    q = q[:1].upper() + q[1:]
    return "\n".join(
        [
            q,
            "Answer with exactly one of:",
            class_list_text(answers),
            "Write the answer exactly as in the list. " + FORMAT_INSTRUCTION,
        ]
    )


def select_questions(image_ids: list[int], per_image: int | None, max_rows: int | None, seed: int, split: str):
    """Positions of the questions kept: up to `per_image` per image (seeded), then at most `max_rows` (seeded)."""
    rng = np.random.default_rng([seed, sum(map(ord, split))])
    by_image: dict[int, list[int]] = {}
    for pos, image_id in enumerate(image_ids):
        by_image.setdefault(image_id, []).append(pos)
    kept: list[int] = []
    for image_id in sorted(by_image):
        positions = by_image[image_id]
        if per_image is not None and len(positions) > per_image:
            positions = sorted(rng.choice(positions, size=per_image, replace=False).tolist())
        kept.extend(positions)
    if max_rows is not None and len(kept) > max_rows:
        kept = sorted(rng.choice(kept, size=max_rows, replace=False).tolist())
    return sorted(kept)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `easy-vqa` subcommand's options."""
    p.add_argument("--out", required=True, type=Path, help="output folder (train.parquet, test.parquet, report.json)")
    p.add_argument("--per-image", type=int, default=1, help="questions per image (default 1; 0 = all)")
    p.add_argument("--max-rows", type=int, default=None, help="at most N rows per split (seeded)")
    p.add_argument("--splits", default="train,test", help="which splits to write")
    p.add_argument("--min-size", type=int, default=128, help="nearest-neighbour integer upscale to this side (128)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--on-error", choices=("fail", "skip"), default="fail")
    p.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Convert the requested splits; returns (and writes) the report."""
    data, report, start = package_data_dir(), Report(args.on_error), time.perf_counter()
    answers = [a.strip() for a in (data / "answers.txt").read_text().splitlines() if a.strip()]
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    unknown = sorted(set(splits) - set(SPLIT_FILES))
    if unknown:
        raise DataPrepError(f"--splits {unknown}: easy-vqa has {sorted(SPLIT_FILES)}")
    out, files = OutputDir(args.out), {}
    try:
        for split in splits:
            questions = json.loads((data / SPLIT_FILES[split] / "questions.json").read_text())
            keep = select_questions(
                [int(q[2]) for q in questions], args.per_image or None, args.max_rows, args.seed, split
            )
            writer = RowGroupWriter(out.path(f"{split}.parquet"), 256)
            for pos in keep:
                text, answer, image_id = questions[pos]
                rel = f"{SPLIT_FILES[split]}/images/{int(image_id)}.png"
                enc = encode_image_bytes((data / rel).read_bytes(), args.min_size)
                if enc.data is None:
                    report.issue(enc.error_kind, rel, enc.error)
                    continue
                report.add_image(enc.conversions, enc.width, enc.height)
                writer.add(
                    make_row(
                        data_source=NAME,
                        question=question_text(text, answers),
                        image_bytes=enc.data,
                        image_path=rel,
                        domain=DOMAIN,
                        label_ids=[answers.index(answer)],
                        class_names=answers,
                        multi_label=False,
                        transforms=TRANSFORMS,
                        prompt_variant="plain",
                        split=split,
                        index=pos,
                        source_path=f"easy_vqa/{rel}#q{pos}",
                    )
                )
            writer.close()
            files[f"{split}.parquet"] = {"rows": writer.count}
        result = {
            "dataset": NAME,
            "domain": DOMAIN,
            "seed": args.seed,
            "per_image": args.per_image,
            "max_rows": args.max_rows,
            "class_names": answers,
            "transforms": list(TRANSFORMS),
            "files": files,
            **report.to_dict(),
        }
        out.write_text("report.json", dumps(result))
        out.commit()
    except BaseException:
        out.abort()
        raise
    rows = ", ".join(f"{n} ({f['rows']})" for n, f in files.items())
    print(f"easy_vqa: wrote {rows} to {args.out} in {time.perf_counter() - start:.1f} s")
    return result
