"""CLI: probe the vision encoders of local HF checkpoints (offline); write probes.json, probes.md and PNGs.

    python -m verl_ext.probes --model base=ckpt/base --model sft=ckpt/sft --model dpo=ckpt/dpo --out probes/
        [--probes linear,segmentation,weights,gradmap] [--tasks s2-ndvi4,s2-greener-half,digits-noisy,...]
        [--probe-parquet NAME=data/ucm/train_all.parquet:data/ucm/test.parquet ...]
        [--input-size 224] [--blocks all|last|every:K|i,j] [--limit N] [--gradmap-data rows.parquet]
        [--device cpu|cuda] [--seed 0] [--random-seeds 1234,1235,1236] [--c-grid 0.1,1,10] [--batch-size 32]
        [--no-progress]

Every table has the random-encoder floor (one row per seed, mean ± std), the trivial colour rows (no encoder) and the
models' rows, each with a 95 % paired bootstrap interval, and DPO − SFT (when both are given) with its interval.
`--probe-parquet` adds any data_prep parquet (UCM, AID, a class-folder set) as a linear-probe set.
A user mistake prints one line on stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from verl_ext.probes.datasets import TASKS


def _model(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m verl_ext.probes", description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", type=_model, required=True, help="NAME=PATH (repeat); first = base")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--probes", default="linear,segmentation,weights", help="linear,segmentation,weights,gradmap")
    p.add_argument("--tasks", default=",".join(TASKS), help=f"linear-probe sets ({','.join(TASKS)})")
    p.add_argument("--input-size", type=int, default=224, help="fixed image side in px, a multiple of 28 (224)")
    p.add_argument("--blocks", default="all", help="all | last | every:K | comma list of block indices")
    p.add_argument("--limit", type=int, default=None, help="at most N images per split (quick runs)")
    p.add_argument("--gradmap-data", default=None, help="parquet of image + prompt rows for the gradient maps")
    p.add_argument("--gradmap-rows", type=int, default=6, help="rows shown in gradmaps.png")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    p.add_argument("--seed", type=int, default=0, help="splits and probe seed")
    p.add_argument(
        "--random-seeds", default="1234,1235,1236", help="seeds of the random-weight encoders (the floor), comma list"
    )
    p.add_argument(
        "--probe-parquet", action="append", default=[], help="NAME=PATH[:PATH...] a data_prep parquet as a probe set"
    )
    p.add_argument("--c-grid", default=None, help="logistic-regression C values, comma list (default 0.1..100)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # outputs are written atomically: nothing half-written
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from verl_ext.probes.runner import ProbeError, run

    names = [n for n, _ in args.model]
    if len(set(names)) != len(names) or "random" in names:
        print(f"error: --model names must be unique and not 'random' (got {names})", file=sys.stderr)
        return 2
    from verl_ext.probes.linear import C_GRID

    try:
        grid = [float(c) for c in args.c_grid.split(",")] if args.c_grid else list(C_GRID)
    except ValueError:
        print(f"error: --c-grid must be a comma list of numbers, got {args.c_grid!r}", file=sys.stderr)
        return 2
    try:
        seeds = [int(s) for s in args.random_seeds.split(",") if s.strip()]
    except ValueError:
        print(f"error: --random-seeds must be a comma list of integers, got {args.random_seeds!r}", file=sys.stderr)
        return 2
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        results = run(
            dict(args.model),
            args.out,
            probes=[p.strip() for p in args.probes.split(",") if p.strip()],
            tasks=[t.strip() for t in args.tasks.split(",") if t.strip()],
            input_size=args.input_size,
            blocks=args.blocks,
            limit=args.limit,
            seed=args.seed,
            random_seeds=seeds,
            device=device,
            batch_size=args.batch_size,
            gradmap_data=args.gradmap_data,
            gradmap_count=args.gradmap_rows,
            c_grid=grid,
            progress=not args.no_progress,
            probe_parquets=args.probe_parquet,
        )
    except (ProbeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"probes of {names} (+ {len(seeds)} random floors, colour rows) -> {args.out}/probes.json, probes.md")
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
