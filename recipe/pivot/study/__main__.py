"""CLI: the PIVOT study end to end (resumable): `python -m recipe.pivot.study --spec SPEC.yaml [--set k=v ...]`.

    python -m recipe.pivot.study --spec recipe/pivot/study/qwen25vl_3b.yaml \\
        --set base=/models/Qwen2.5-VL-3B-Instruct --set train=data/s2/train.parquet --set test=data/s2/test.parquet \\
        --set out=outputs/pivot                     # GPU node (examples/run_pivot_study.sh)
    python -m recipe.pivot.study --spec recipe/pivot/study/cpu_tiny.yaml --set base=... ...   # CPU, tiny model
    python -m recipe.pivot.study --spec ... --dry-run                                         # print the commands

A spec mistake (an unknown `--set` or `--only` name included) prints one line and exits 2; a failed stage names its
log and exits 1 (rerun to resume).
"""

from __future__ import annotations

import argparse
import signal
import sys

from recipe.common.steps import parse_only
from recipe.common.templates import SpecError
from recipe.pivot.study.runner import StudyError, load_spec, plan, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipe.pivot.study", description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, help="study spec YAML (vars, env, commands, encoders)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a spec var")
    parser.add_argument("--dry-run", action="store_true", help="print each pending stage's command, run nothing")
    parser.add_argument("--only", default=None, help="comma-separated stages (and/or 'report') to run")
    parser.add_argument(
        "--jobs", type=int, default=1, help="stages run at once when their inputs are ready (1: one after another)"
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stage markers and outputs are written atomically
    sets = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"error: --set {item!r}: expected KEY=VALUE", file=sys.stderr)
            return 2
        sets[key] = value
    try:
        spec = load_spec(args.spec, sets)
        only = parse_only(args.only, [*(stage.name for stage in plan(spec)), "report"])
    except (OSError, StudyError, SpecError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        status = run(spec, dry_run=args.dry_run, jobs=args.jobs, only=only)
    except StudyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except SpecError as err:  # a template naming an unknown variable
        print(f"error: {err}", file=sys.stderr)
        return 2
    ran, skipped = sum(s == "done" for s in status.values()), sum(s == "skipped" for s in status.values())
    print(f"study: {ran} stages run, {skipped} skipped -> {spec['vars']['out']}/report/results.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
