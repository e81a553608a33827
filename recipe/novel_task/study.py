"""The study runner: one command for base evaluation -> GRPO / SFT / SFT-on-rollouts -> evaluation -> report.

    python -m recipe.novel_task.study --spec recipe/novel_task/config/study.yaml [--dry-run] [--only a,b]
        [--output-root DIR] [--set name=value ...]

A spec (see `config/study.yaml` for GPU, `config/study_cpu.yaml` for the CPU run with the tiny model) lists `steps`
in order, each a COMMAND TEMPLATE (`recipe.common.templates.build_argv`: split into tokens first, then each token
formatted: no shell, a value is always one argument), with `vars` shared by all steps, an optional per-step `env` and
an optional per-step `clean` (the folders the step writes: emptied before it reruns, so a rerun never resumes from an
earlier command's checkpoints). Steps run one after the other through `recipe.common.steps`: a finished step leaves
`{output_root}/.study/<step>.done.json` and is skipped on a rerun only if its command (argv and env) and the inputs it
names (data, model, checkpoints of earlier steps) are unchanged, else it reruns saying why; a failed one stops the
study (later steps need its outputs). Last, the `report:` section is collected into `{report.out}/report.md` + PNGs
(`recipe.novel_task.report`).

Variables: every key of `vars` (strings may use one another), `python` (this interpreter), `output_root` and `repo`
(the project's root folder).
`--set name=value` overrides a variable of `vars` (e.g. `--set model=/models/Qwen2.5-VL-7B-Instruct`); a name not under
`vars` is refused with the list of known ones.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from recipe.common.steps import Runner, Step, StepFailed, check_set_names, parse_only, parse_sets
from recipe.common.templates import Resolver, SpecError, build_argv

REPO = Path(__file__).resolve().parents[2]
TOP_KEYS = {"output_root", "vars", "steps", "report", "workdir"}
STEP_KEYS = {"name", "run", "env", "clean"}
RESERVED = ("python", "output_root", "repo")


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
            raise SpecError(f"step {step!r}: needs 'name' and 'run' (and optionally 'env', 'clean'), nothing else")
        names.append(str(step["name"]))
    if len(set(names)) != len(names):
        raise SpecError(f"step names repeat: {names}")
    if not isinstance(spec.get("report"), Mapping):
        raise SpecError("a study spec needs a 'report' section")
    return spec


def variables(spec: Mapping[str, Any], output_root: str | None = None, sets: Mapping[str, Any] | None = None):
    """The raw template variables of a spec (vars < --set; python, output_root and repo fixed).

    Raises:
        SpecError: a `vars` key the runner sets, or a `sets` name that is not a key of `vars`.
    """
    spec_vars = dict(spec.get("vars") or {})
    clash = set(RESERVED) & set(spec_vars)
    if clash:
        raise SpecError(f"variables {sorted(clash)} are set by the runner")
    check_set_names(sets or {}, spec_vars, RESERVED)
    root = output_root or str(spec.get("output_root", "outputs"))
    return {**spec_vars, **(sets or {}), "python": sys.executable, "output_root": root, "repo": str(REPO)}


def study_steps(spec: Mapping[str, Any], raw: Mapping[str, Any]) -> list[Step]:
    """The spec's steps with argv, env, clean folders, marker and log resolved."""
    root, resolver = Path(raw["output_root"]), Resolver(raw)
    steps = []
    for entry in spec["steps"]:
        name = str(entry["name"])
        env = {str(k): str(v) for k, v in resolver.format_value(dict(entry.get("env") or {})).items()}
        clean = [Path(resolver.format_value(str(folder))) for folder in entry.get("clean") or []]
        step = Step(
            name,
            build_argv(str(entry["run"]), raw),
            marker=root / ".study" / f"{name}.done.json",
            log=root / "logs" / f"{name}.log",
            env=env,
            cwd=spec.get("workdir"),
            clean=clean,
            resumable=True,
        )
        steps.append(step)
    return steps


def run_study(
    spec: Mapping[str, Any],
    output_root: str | None = None,
    sets: Mapping[str, Any] | None = None,
    only: set[str] | None = None,
    dry_run: bool = False,
    echo: Callable[[str], None] = print,
) -> int:
    """Run the spec's steps, then write the report; returns the exit code (1 if a step failed)."""
    raw = variables(spec, output_root, sets)
    root = Path(raw["output_root"])
    runner = Runner(echo=echo, dry_run=dry_run, state_dirs=[root / ".study", root / "logs"])
    for step in study_steps(spec, raw):
        if only is not None and step.name not in only:
            continue
        try:
            runner.run(step)
        except StepFailed as err:
            if err.code is not None:
                echo(f"[{step.name}] FAILED with exit code {err.code}; see {err.log}")
            else:
                echo(f"[{step.name}] FAILED: {err}")
            return 1
    if only is not None and "report" not in only:
        return 0
    from recipe.novel_task.report import write_report

    # a dry run writes the planned report's skeleton
    paths = write_report(Resolver(raw).format_value({**spec["report"], "planned": dry_run}))
    for kind, path in paths.items():
        echo(f"{kind}: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    p = argparse.ArgumentParser(prog="python -m recipe.novel_task.study", description=__doc__.splitlines()[0])
    p.add_argument("--spec", required=True, help="study spec YAML (config/study.yaml, config/study_cpu.yaml)")
    p.add_argument("--output-root", default=None, help="override the spec's output_root")
    p.add_argument("--only", default=None, help="comma-separated step names (and/or 'report') to run")
    p.add_argument("--set", action="append", default=[], help="name=value: override a variable of vars (repeatable)")
    p.add_argument(
        "--dry-run", action="store_true", help="print what would run and why, run nothing but the report skeleton"
    )
    args = p.parse_args(argv)
    try:
        spec = load_spec(args.spec)
        sets = parse_sets(args.set, spec.get("vars") or {}, RESERVED)
        only = parse_only(args.only, [*(str(s["name"]) for s in spec["steps"]), "report"])
        return run_study(spec, args.output_root, sets, only, args.dry_run)
    except (SpecError, FileNotFoundError, json.JSONDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
