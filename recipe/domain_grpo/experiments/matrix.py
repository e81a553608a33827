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
    + every key of the spec's `vars`, then of the dataset's entry, then of the method's `vars`, then `--set` (later
    wins; `--set` takes only names defined somewhere above).

Resumable (`recipe.common.steps`): training and evaluation are two steps with done-markers in {run_dir}
(`train_done.json`, `eval_done.json`) keyed on their argv, environment and the inputs their commands name (data, base
model, launch script; the evaluated checkpoint). A cell is skipped only when both match and {eval_dir}/metrics.json
exists; a failed evaluation is retried without retraining; a training that reruns for another reason starts from an
emptied {ckpt_dir} (one that was interrupted resumes from its checkpoints), and its evaluation reruns after it.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recipe.common.steps import Runner, Step, StepFailed
from recipe.common.templates import Resolver, SpecError, build_argv
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
TRAIN_MARKER, EVAL_MARKER = "train_done.json", "eval_done.json"
CELL_FILE, METRICS_FILE = "cell.json", "metrics.json"


@dataclass
class Cell:
    """One (method, dataset, shot, seed) of the matrix, with its resolved argvs and paths."""

    method: str
    dataset: str
    domain: str
    shot: int
    seed: int
    run_dir: Path
    ckpt_dir: Path
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


def known_variables(spec: Mapping[str, Any]) -> set[str]:
    """Every variable a cell's templates can use that `--set` may override (not the cell keys, not output_root)."""
    names = set(DEFAULT_VARS) | set(spec.get("vars") or {})
    for entry in spec["datasets"].values():
        names |= set(entry) - {"domain"}
    for entry in spec["methods"].values():
        names |= set((entry or {}).get("vars") or {})
    return names - set(CELL_KEYS)


def cell_variables(
    spec: Mapping[str, Any],
    method: str,
    dataset: str,
    shot: int,
    seed: int,
    output_root: str,
    sets: Mapping[str, Any] | None = None,
):
    """The raw variables of a cell: defaults < spec vars < dataset entry < method vars < `sets`; cell keys last."""
    ds_entry = dict(spec["datasets"][dataset])
    domain = ds_entry.pop("domain")
    layers = [DEFAULT_VARS, spec.get("vars") or {}, ds_entry, (spec["methods"][method] or {}).get("vars") or {}]
    cell = {"method": method, "dataset": dataset, "domain": domain, "shot": shot, "seed": seed}
    cell |= {"python": sys.executable, "output_root": output_root}
    variables: dict[str, Any] = {}
    for layer in [*layers, sets or {}]:
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
    sets: Mapping[str, Any] | None = None,
) -> list[Cell]:
    """Every cell of the spec (optionally filtered), with argvs built; spec order: methods, datasets, shots, seeds.

    Args:
        spec: a validated spec.
        methods, datasets, shots, seeds: keep only these (None: all). A shot filter does not drop shot-independent
            methods (their single cell has shot 0).
        output_root: overrides the spec's output_root.
        sets: variables overridden in every cell (`--set`; checked against `known_variables` by the CLI).

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
                        cells.append(make_cell(spec, method, dataset, shot, seed, root, sets))
    return cells


def make_cell(
    spec: Mapping[str, Any],
    method: str,
    dataset: str,
    shot: int,
    seed: int,
    root: str,
    sets: Mapping[str, Any] | None = None,
) -> Cell:
    """Resolve one cell's argvs, paths and environment."""
    variables = cell_variables(spec, method, dataset, shot, seed, root, sets)
    entry = spec["methods"][method] or {}
    train_cmd, eval_cmd = entry.get("train"), entry.get("eval", "eval")
    resolver = Resolver(variables)
    env = {str(k): resolver.vformat(str(v), (), {}) for k, v in (spec.get("env") or {}).items()}
    return Cell(
        method=method,
        dataset=dataset,
        domain=str(variables["domain"]),
        shot=shot,
        seed=seed,
        run_dir=Path(resolver.resolve("run_dir")),
        ckpt_dir=Path(resolver.resolve("ckpt_dir")),
        eval_dir=Path(resolver.resolve("eval_dir")),
        train_argv=build_argv(spec["commands"][train_cmd], variables) if train_cmd else None,
        eval_argv=build_argv(spec["commands"][eval_cmd], variables),
        env=env,
    )


def cell_steps(cell: Cell, cwd: str | None = None) -> tuple[Step | None, Step]:
    """The cell's training step (None for evaluation-only methods) and evaluation step.

    Note:
        Nothing under {run_dir} is an input of training (its checkpoints, logs and markers live there); {ckpt_dir} is
        emptied before a training that reruns for another reason than an interruption. The evaluation's inputs
        include the checkpoint it evaluates; only its metrics.json is removed before it reruns.
    """
    train = None
    if cell.train_argv is not None:
        train = Step(
            "train",
            cell.train_argv,
            marker=cell.train_marker,
            log=cell.run_dir / "train.log",
            env=cell.env,
            cwd=cwd,
            writes=[cell.run_dir],
            clean=[cell.ckpt_dir],
            resumable=True,
        )
    evaluation = Step(
        "eval",
        cell.eval_argv,
        marker=cell.run_dir / EVAL_MARKER,
        log=cell.run_dir / "eval.log",
        env=cell.env,
        cwd=cwd,
        outputs=[cell.metrics_path],
        writes=[cell.eval_dir],
    )
    return train, evaluation


def _todo(cell: Cell, runner: Runner, cwd: str | None) -> list[tuple[Step, str]]:
    """The steps that must run now, each with why (empty: the cell is done)."""
    train, evaluation = cell_steps(cell, cwd)
    reason = runner.check(train) if train is not None else None
    if reason is not None:
        return [(train, reason), (evaluation, "after training")]
    reason = runner.check(evaluation)
    return [] if reason is None else [(evaluation, reason)]


def plan(cell: Cell, cwd: str | None = None) -> str:
    """What running `cell` would do now: "done", "eval" (training up to date or none), or "train+eval"."""
    todo = _todo(cell, Runner(), cwd)
    return "done" if not todo else "+".join(step.name for step, _ in todo)


def run_cell(cell: Cell, dry_run: bool = False, echo: Callable[[str], None] = print, cwd: str | None = None) -> str:
    """Run (or, with dry_run, print) one cell; returns "skipped", "planned", "done" or "failed"."""
    runner = Runner(echo=lambda text: echo(f"  {text}"))
    todo = _todo(cell, runner, cwd)
    if not todo:
        echo(f"[{cell.name}] done before, skipped")
        return "skipped"
    echo(f"[{cell.name}] {'+'.join(step.name for step, _ in todo)}: {todo[0][1]}")
    if dry_run:
        for step, _ in todo:
            echo(f"  {step.name}: {shlex.join(step.argv)}")
        return "planned"
    cell.run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(cell.run_dir / CELL_FILE, cell.record())
    for step, reason in todo:
        try:
            runner.run(step, reason)
        except StepFailed as err:
            echo(f"  {err}")
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
