"""The study runner: one command for base evaluation -> GRPO / SFT / SFT-on-rollouts -> evaluation -> report.

    python -m recipe.novel_task.study --spec recipe/novel_task/config/study.yaml [--dry-run] [--only a,b]
        [--output-root DIR] [--set name=value ...]

A spec (see `config/study.yaml` for GPU, `config/study_cpu.yaml` for the CPU run with the tiny model) lists `steps`
in order, each a COMMAND TEMPLATE built with the experiment matrix's `build_argv` (split into tokens first, then each
token formatted: no shell, a value is always one argument), with `vars` shared by all steps and an optional per-step
`env`. Steps run one after the other; a finished step leaves `{output_root}/.study/<step>.done.json` and is skipped on
a rerun (resumable), a failed one stops the study (later steps need its outputs). Last, the `report:` section is
collected into `{report.out}/report.md` + PNGs (`recipe.novel_task.report`).

Variables: every key of `vars` (strings may use one another), `python` (this interpreter), `output_root` and `repo`
(the project's root folder).
`--set name=value` overrides a variable (e.g. `--set model=/models/Qwen2.5-VL-7B-Instruct`).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from recipe.domain_grpo.experiments.matrix import SpecError, _launch, _Resolver, build_argv
from verl_ext.evaluation.runner import write_json_atomic

REPO = Path(__file__).resolve().parents[2]
TOP_KEYS = {"output_root", "vars", "steps", "report", "workdir"}
STEP_KEYS = {"name", "run", "env"}


def load_spec(path: str | Path) -> dict[str, Any]:
    """Read and check a study spec."""
    import yaml

    spec = yaml.safe_load(Path(path).read_text()) or {}
    unknown = set(spec) - TOP_KEYS
    if unknown:
        raise SpecError(f"unknown top-level keys {sorted(unknown)}; allowed: {sorted(TOP_KEYS)}")
    steps = spec.get("steps")
    if not isinstance(steps, list) or not steps:
        raise SpecError("a study spec needs a non-empty list 'steps'")
    names = []
    for step in steps:
        if not isinstance(step, Mapping) or not {"name", "run"} <= set(step) or set(step) - STEP_KEYS:
            raise SpecError(f"step {step!r}: needs 'name' and 'run' (and optionally 'env'), nothing else")
        names.append(str(step["name"]))
    if len(set(names)) != len(names):
        raise SpecError(f"step names repeat: {names}")
    if not isinstance(spec.get("report"), Mapping):
        raise SpecError("a study spec needs a 'report' section")
    return spec


def variables(spec: Mapping[str, Any], output_root: str | None = None, sets: Mapping[str, str] | None = None):
    """The raw template variables of a spec (vars < --set; python and output_root fixed)."""
    raw = {**(spec.get("vars") or {}), **(sets or {})}
    clash = {"python", "output_root", "repo"} & set(raw)
    if clash:
        raise SpecError(f"variables {sorted(clash)} are set by the runner")
    root = output_root or str(spec.get("output_root", "outputs"))
    return {**raw, "python": sys.executable, "output_root": root, "repo": str(REPO)}


def resolve(value: Any, raw: Mapping[str, Any]) -> Any:
    """Format a string (or every string inside a mapping/list) with the spec's variables."""
    if isinstance(value, str):
        return _Resolver(raw).vformat(value, (), {})
    if isinstance(value, Mapping):
        return {k: resolve(v, raw) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, raw) for v in value]
    return value


def run_study(
    spec: Mapping[str, Any],
    output_root: str | None = None,
    sets: Mapping[str, str] | None = None,
    only: set[str] | None = None,
    dry_run: bool = False,
    echo: Callable[[str], None] = print,
) -> int:
    """Run the spec's steps, then write the report; returns the exit code (1 if a step failed)."""
    raw = variables(spec, output_root, sets)
    root = Path(raw["output_root"])
    marks = root / ".study"
    for step in spec["steps"]:
        name = str(step["name"])
        if only is not None and name not in only:
            continue
        argv = build_argv(str(step["run"]), raw)
        env = {str(k): str(v) for k, v in resolve(step.get("env") or {}, raw).items()}
        mark = marks / f"{name}.done.json"
        if mark.exists() and not dry_run:
            echo(f"[{name}] done before, skipped")
            continue
        echo(f"[{name}] {shlex.join(argv)}" + (f"  (env {env})" if env else ""))
        if dry_run:
            continue
        started = time.time()
        code = _launch(argv, root / "logs" / f"{name}.log", env, spec.get("workdir"))
        if code != 0:
            echo(f"[{name}] FAILED with exit code {code}; see {root / 'logs' / f'{name}.log'}")
            return 1
        write_json_atomic(mark, {"argv": argv, "env": env, "seconds": round(time.time() - started, 1)})
        echo(f"[{name}] done in {time.time() - started:.0f} s")
    if only is not None and "report" not in only:
        return 0
    from recipe.novel_task.report import write_report

    paths = write_report(resolve({**spec["report"], "planned": dry_run}, raw))  # a dry run: the planned skeleton
    for kind, path in paths.items():
        echo(f"{kind}: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    p = argparse.ArgumentParser(prog="python -m recipe.novel_task.study", description=__doc__.splitlines()[0])
    p.add_argument("--spec", required=True, help="study spec YAML (config/study.yaml, config/study_cpu.yaml)")
    p.add_argument("--output-root", default=None, help="override the spec's output_root")
    p.add_argument("--only", default=None, help="comma-separated step names (and/or 'report') to run")
    p.add_argument("--set", action="append", default=[], help="name=value: override a variable (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print every step's argv, write only the report skeleton")
    args = p.parse_args(argv)
    try:
        spec = load_spec(args.spec)
        sets = dict(item.split("=", 1) for item in args.set if "=" in item)
        if len(sets) != len(args.set):
            raise SpecError("--set takes name=value")
        only = {s.strip() for s in args.only.split(",")} if args.only else None
        return run_study(spec, args.output_root, sets, only, args.dry_run)
    except (SpecError, FileNotFoundError, json.JSONDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
