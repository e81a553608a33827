"""The experiment matrix: methods × datasets × shots × seeds, each cell = a training run, then an evaluation.

A spec YAML (see `paper_matrix.yaml`) holds COMMAND TEMPLATES; a cell's argv is built token by token: the template is
split with `shlex.split` first, then each token is formatted on its own, so a value with spaces or shell characters is
always exactly one argument (no shell is ever used). A token that is exactly ``{name}`` of a LIST variable expands to
that many arguments (e.g. extra Hydra overrides). Literal braces are written ``{{`` / ``}}``.

Template variables (strings may use one another; resolved once per cell, cycles and unknown names are errors):
    method, dataset, domain, shot, seed   the cell (shot = 0 for shot-independent methods); cannot be overridden
    python                                the interpreter running this tool (sys.executable)
    output_root                           the spec's output_root (or --output-root)
    run_dir      = {output_root}/{method}/{dataset}/{shot}shot/seed{seed}
    ckpt_dir     = {run_dir}/checkpoints
    eval_dir     = {run_dir}/eval                      (the evaluation must write {eval_dir}/metrics.json)
    train        = {data_root}/{dataset}/train_{shot}shot.parquet
    test         = {data_root}/{dataset}/test.parquet
    eval_model   = {model}                             (trained methods set it to their exported checkpoint)
    transforms   = ""                                  (the evaluation's views, e.g. "rot90,rot180,rot270")
    extra        = []                                  (a list: extra arguments, spliced where ``{extra}`` stands)
    + every key of the spec's `vars`, then of the dataset's entry, then of the method's `vars` (later wins).

Resumable: a cell whose {eval_dir}/metrics.json exists is skipped; a finished training writes {run_dir}/train_done.json
(atomically) so a failed evaluation is retried without retraining.
"""

from __future__ import annotations

import json
import re
import shlex
import string
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verl_ext.evaluation.runner import write_json_atomic

METHODS: tuple[str, ...] = (
    "zero_shot",
    "prompt_injection",
    "sft",
    "sft_da",
    "grpo",
    "grpo_da",
    "oc",
    "dc",
    "dr",
    "dc_dr",
    "kl_kl",
    "js_js",
    "js_kl",
)
EVAL_ONLY = frozenset({"zero_shot", "prompt_injection"})
CELL_KEYS = ("method", "dataset", "domain", "shot", "seed", "python")
DEFAULT_VARS: dict[str, Any] = {
    "run_dir": "{output_root}/{method}/{dataset}/{shot}shot/seed{seed}",
    "ckpt_dir": "{run_dir}/checkpoints",
    "eval_dir": "{run_dir}/eval",
    "train": "{data_root}/{dataset}/train_{shot}shot.parquet",
    "test": "{data_root}/{dataset}/test.parquet",
    "eval_model": "{model}",
    "transforms": "",
    "extra": [],
}
TOP_KEYS = {"output_root", "vars", "commands", "methods", "datasets", "shots", "seeds", "env", "workdir"}
METHOD_KEYS = {"train", "eval", "shot_independent", "datasets", "vars"}
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_WHOLE_FIELD = re.compile(r"^\{(\w+)\}$")
TRAIN_MARKER, CELL_FILE, METRICS_FILE = "train_done.json", "cell.json", "metrics.json"


class SpecError(ValueError):
    """An invalid experiment spec (unknown method, variable, command, ...)."""


class _Resolver(string.Formatter):
    """Formats templates against raw variables, resolving each variable once, recursively (cycle-checked)."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.raw, self.done, self.stack = dict(raw), {}, []

    def get_field(self, field_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[Any, str]:
        if not field_name.isidentifier():
            raise SpecError(f"template field {{{field_name}}}: only plain names are allowed (no index/attribute)")
        value = self.resolve(field_name)
        if isinstance(value, list):
            raise SpecError(f"list variable {{{field_name}}} can only stand alone as a whole command token")
        return value, field_name

    def resolve(self, name: str) -> Any:
        """The value of variable `name`, its own templates formatted."""
        if name in self.done:
            return self.done[name]
        if name not in self.raw:
            raise SpecError(f"unknown template variable {{{name}}}; known: {sorted(self.raw)}")
        if name in self.stack:
            raise SpecError(f"template variables form a cycle: {' -> '.join([*self.stack, name])}")
        self.stack.append(name)
        value = self.raw[name]
        if isinstance(value, str):
            value = self.vformat(value, (), {})
        elif isinstance(value, (list, tuple)):
            value = [self.vformat(str(v), (), {}) for v in value]
        self.stack.pop()
        self.done[name] = value
        return value


def build_argv(template: str, variables: Mapping[str, Any]) -> list[str]:
    """The argv of a command template for one cell (split first, then each token formatted: no shell, no injection).

    Args:
        template: a command line, e.g. "bash run.sh data.train_files={train} {extra}".
        variables: the raw cell variables (see the module docstring).
    """
    resolver = _Resolver(variables)
    argv: list[str] = []
    for token in shlex.split(template):
        whole = _WHOLE_FIELD.match(token)
        if whole and isinstance(resolver.resolve(whole.group(1)), list):
            argv.extend(resolver.resolve(whole.group(1)))
        else:
            argv.append(resolver.vformat(token, (), {}))
    return argv


@dataclass
class Cell:
    """One (method, dataset, shot, seed) of the matrix, with its resolved argvs and paths."""

    method: str
    dataset: str
    domain: str
    shot: int
    seed: int
    run_dir: Path
    eval_dir: Path
    train_argv: list[str] | None
    eval_argv: list[str]
    env: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.method} {self.dataset} {self.shot}shot seed{self.seed}"

    @property
    def metrics_path(self) -> Path:
        return self.eval_dir / METRICS_FILE

    @property
    def train_marker(self) -> Path:
        return self.run_dir / TRAIN_MARKER

    def record(self) -> dict[str, Any]:
        """What cell.json holds (collect reads method/dataset/domain/shot/seed and eval_dir from it)."""
        try:
            eval_dir = str(self.eval_dir.relative_to(self.run_dir))
        except ValueError:
            eval_dir = str(self.eval_dir)
        return {
            "method": self.method,
            "dataset": self.dataset,
            "domain": self.domain,
            "shot": self.shot,
            "seed": self.seed,
            "eval_dir": eval_dir,
            "train_argv": self.train_argv,
            "eval_argv": self.eval_argv,
        }


def load_spec(path: str | Path) -> dict[str, Any]:
    """Read and validate a spec YAML (see `paper_matrix.yaml`)."""
    import yaml

    spec = yaml.safe_load(Path(path).read_text()) or {}
    validate_spec(spec)
    return spec


def validate_spec(spec: Mapping[str, Any]) -> None:
    """Raise SpecError for unknown keys/methods/commands, bad dataset names or missing lists."""
    unknown = set(spec) - TOP_KEYS
    if unknown:
        raise SpecError(f"unknown top-level keys {sorted(unknown)}; allowed: {sorted(TOP_KEYS)}")
    for key in ("methods", "datasets", "commands"):
        if not isinstance(spec.get(key), Mapping) or not spec[key]:
            raise SpecError(f"spec needs a non-empty mapping {key!r}")
    for key in ("shots", "seeds"):
        values = spec.get(key)
        if not isinstance(values, list) or not values or not all(isinstance(v, int) for v in values):
            raise SpecError(f"spec needs a non-empty list of integers {key!r}")
    for name, entry in spec["datasets"].items():
        if not _NAME.match(str(name)):
            raise SpecError(f"dataset name {name!r}: use letters, digits, '_', '.', '-' (it becomes a folder)")
        if not isinstance(entry, Mapping) or "domain" not in entry:
            raise SpecError(f"dataset {name!r} needs a 'domain'")
    for name, entry in spec["methods"].items():
        if name not in METHODS:
            raise SpecError(f"unknown method {name!r}; methods are {list(METHODS)}")
        entry = entry or {}
        extra = set(entry) - METHOD_KEYS
        if extra:
            raise SpecError(f"method {name!r}: unknown keys {sorted(extra)}; allowed: {sorted(METHOD_KEYS)}")
        if entry.get("eval", "eval") is None:
            raise SpecError(f"method {name!r}: every method needs an eval command")
        for role in ("train", "eval"):
            cmd = entry.get(role, "eval" if role == "eval" else None)
            if cmd is not None and cmd not in spec["commands"]:
                raise SpecError(f"method {name!r}: {role} command {cmd!r} is not under 'commands'")
        if name in EVAL_ONLY and entry.get("train"):
            raise SpecError(f"method {name!r} is evaluation only: it cannot have a train command")
        for ds in entry.get("datasets") or []:
            if ds not in spec["datasets"]:
                raise SpecError(f"method {name!r}: dataset {ds!r} is not under 'datasets'")


def cell_variables(spec: Mapping[str, Any], method: str, dataset: str, shot: int, seed: int, output_root: str):
    """The raw variables of a cell: defaults < spec vars < dataset entry < method vars; cell keys fixed last."""
    ds_entry = dict(spec["datasets"][dataset])
    domain = ds_entry.pop("domain")
    layers = [DEFAULT_VARS, spec.get("vars") or {}, ds_entry, (spec["methods"][method] or {}).get("vars") or {}]
    cell = {"method": method, "dataset": dataset, "domain": domain, "shot": shot, "seed": seed}
    cell |= {"python": sys.executable, "output_root": output_root}
    variables: dict[str, Any] = {}
    for layer in layers:
        clash = set(layer) & set(CELL_KEYS)
        if clash:
            raise SpecError(f"variables {sorted(clash)} are set by the cell and cannot be overridden")
        variables.update(layer)
    variables.update(cell)
    return variables


def expand_cells(
    spec: Mapping[str, Any],
    methods: Iterable[str] | None = None,
    datasets: Iterable[str] | None = None,
    shots: Iterable[int] | None = None,
    seeds: Iterable[int] | None = None,
    output_root: str | None = None,
) -> list[Cell]:
    """Every cell of the spec (optionally filtered), with argvs built; spec order: methods, datasets, shots, seeds.

    Args:
        spec: a validated spec.
        methods, datasets, shots, seeds: keep only these (None: all). A shot filter does not drop shot-independent
            methods (their single cell has shot 0).
        output_root: overrides the spec's output_root.

    Note:
        Shot-independent methods (zero_shot, prompt_injection by default; `shot_independent: true`) get one cell per
        dataset and seed with shot 0; the tables repeat them in every shot's table, as the paper does.
    """
    keep = {k: set(v) if v is not None else None for k, v in dict(m=methods, d=datasets, k=shots, s=seeds).items()}
    root = output_root or str(spec.get("output_root", "outputs/experiments"))
    cells = []
    for method, entry in spec["methods"].items():
        entry = entry or {}
        if keep["m"] is not None and method not in keep["m"]:
            continue
        independent = bool(entry.get("shot_independent", method in EVAL_ONLY))
        method_shots = [0] if independent else [k for k in spec["shots"] if keep["k"] is None or k in keep["k"]]
        for dataset in entry.get("datasets") or list(spec["datasets"]):
            if keep["d"] is not None and dataset not in keep["d"]:
                continue
            for shot in method_shots:
                for seed in spec["seeds"]:
                    if keep["s"] is None or seed in keep["s"]:
                        cells.append(make_cell(spec, method, dataset, shot, seed, root))
    return cells


def make_cell(spec: Mapping[str, Any], method: str, dataset: str, shot: int, seed: int, root: str) -> Cell:
    """Resolve one cell's argvs, paths and environment."""
    variables = cell_variables(spec, method, dataset, shot, seed, root)
    entry = spec["methods"][method] or {}
    train_cmd, eval_cmd = entry.get("train"), entry.get("eval", "eval")
    resolver = _Resolver(variables)
    env = {str(k): resolver.vformat(str(v), (), {}) for k, v in (spec.get("env") or {}).items()}
    return Cell(
        method=method,
        dataset=dataset,
        domain=str(variables["domain"]),
        shot=shot,
        seed=seed,
        run_dir=Path(resolver.resolve("run_dir")),
        eval_dir=Path(resolver.resolve("eval_dir")),
        train_argv=build_argv(spec["commands"][train_cmd], variables) if train_cmd else None,
        eval_argv=build_argv(spec["commands"][eval_cmd], variables),
        env=env,
    )


def plan(cell: Cell) -> str:
    """What running `cell` would do now: "done", "eval" (training finished or none), or "train+eval"."""
    if cell.metrics_path.exists():
        return "done"
    if cell.train_argv is None or cell.train_marker.exists():
        return "eval"
    return "train+eval"


def _launch(argv: list[str], log: Path, env: Mapping[str, str], cwd: str | None) -> int:
    """Run argv (no shell) with stdout+stderr appended to `log`; returns the exit code."""
    import os

    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as f:
        f.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} $ {shlex.join(argv)}\n")
        f.flush()
        try:
            return subprocess.run(
                argv, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **env}, cwd=cwd
            ).returncode
        except OSError as err:  # e.g. the program does not exist
            f.write(f"# could not start: {err}\n")
            return 127


def run_cell(cell: Cell, dry_run: bool = False, echo: Callable[[str], None] = print, cwd: str | None = None) -> str:
    """Run (or, with dry_run, print) one cell; returns "skipped", "planned", "done" or "failed"."""
    todo = plan(cell)
    echo(f"[{cell.name}] {todo if todo != 'done' else 'done: metrics.json exists, skipped'}")
    if todo == "done":
        return "skipped"
    steps = ([("train", cell.train_argv)] if todo == "train+eval" else []) + [("eval", cell.eval_argv)]
    if dry_run:
        for role, argv in steps:
            echo(f"  {role}: {shlex.join(argv)}")
        return "planned"
    cell.run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(cell.run_dir / CELL_FILE, cell.record())
    for role, argv in steps:
        log = cell.run_dir / f"{role}.log"
        echo(f"  {role}: {shlex.join(argv)}  (log: {log})")
        started = time.time()
        code = _launch(argv, log, cell.env, cwd)
        if code != 0:
            echo(f"  {role} FAILED with exit code {code}; see {log}")
            return "failed"
        if role == "train":
            write_json_atomic(cell.train_marker, {"argv": argv, "seconds": round(time.time() - started, 1)})
    if not cell.metrics_path.exists():
        echo(f"  eval exited 0 but wrote no {cell.metrics_path}")
        return "failed"
    return "done"


def run_matrix(
    cells: Sequence[Cell],
    dry_run: bool = False,
    stop_on_error: bool = False,
    echo: Callable[[str], None] = print,
    cwd: str | None = None,
) -> dict[str, int]:
    """Run every cell in order; a failed cell does not stop the others unless `stop_on_error`. Returns status counts."""
    counts: dict[str, int] = {}
    for cell in cells:
        status = run_cell(cell, dry_run, echo, cwd)
        counts[status] = counts.get(status, 0) + 1
        if status == "failed" and stop_on_error:
            break
    echo("summary: " + json.dumps(counts, sort_keys=True))
    return counts
