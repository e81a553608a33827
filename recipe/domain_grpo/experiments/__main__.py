"""CLI of the experiment matrix: `run` (train + evaluate each cell, resumable) and `collect` (tables + plot).

python -m recipe.domain_grpo.experiments run --spec SPEC.yaml [--dry-run] [--methods a,b] [--datasets ucm]
    [--shots 1,2] [--seeds 0] [--output-root DIR] [--set name=value ...] [--stop-on-error]
python -m recipe.domain_grpo.experiments collect --runs DIR --out DIR
"""

from __future__ import annotations

import argparse
import sys

from recipe.common.steps import parse_sets
from recipe.domain_grpo.experiments import matrix


def _names(text: str | None) -> list[str] | None:
    """ "a,b" -> ["a", "b"]; None stays None."""
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def _ints(text: str | None) -> list[int] | None:
    """ "1,2" -> [1, 2]; None stays None."""
    return None if text is None else [int(t) for t in _names(text) or []]


def build_parser() -> argparse.ArgumentParser:
    """The parser with the `run` and `collect` subcommands."""
    parser = argparse.ArgumentParser(
        prog="python -m recipe.domain_grpo.experiments", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train then evaluate every cell of a spec (skips finished cells)")
    run.add_argument("--spec", required=True, help="spec YAML (see paper_matrix.yaml)")
    run.add_argument("--dry-run", action="store_true", help="print each cell's argv, run nothing, write nothing")
    run.add_argument("--methods", help="comma-separated subset of the spec's methods")
    run.add_argument("--datasets", help="comma-separated subset of the spec's datasets")
    run.add_argument("--shots", help="comma-separated subset of the spec's shots")
    run.add_argument("--seeds", help="comma-separated subset of the spec's seeds")
    run.add_argument("--output-root", help="override the spec's output_root")
    run.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="override a variable in every cell"
    )
    run.add_argument("--stop-on-error", action="store_true", help="stop at the first failed cell")
    collect = sub.add_parser("collect", help="metrics.json files -> tables.md, results.json, accuracy_vs_shots.png")
    collect.add_argument("--runs", required=True, help="the matrix's output_root")
    collect.add_argument("--out", required=True, help="report directory")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (1 if a cell failed or nothing was found)."""
    args = build_parser().parse_args(argv)
    if args.command == "run":
        try:
            spec = matrix.load_spec(args.spec)
            sets = parse_sets(args.set, matrix.known_variables(spec), reserved=[*matrix.CELL_KEYS, "output_root"])
            cells = matrix.expand_cells(
                spec,
                methods=_names(args.methods),
                datasets=_names(args.datasets),
                shots=_ints(args.shots),
                seeds=_ints(args.seeds),
                output_root=args.output_root,
                sets=sets,
            )
        except matrix.SpecError as err:
            print(f"spec error: {err}", file=sys.stderr)
            return 2
        counts = matrix.run_matrix(cells, args.dry_run, args.stop_on_error, cwd=spec.get("workdir"))
        return 1 if counts.get("failed") else 0
    from recipe.domain_grpo.experiments.tables import write_report

    paths = write_report(args.runs, args.out)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
