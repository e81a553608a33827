"""The PIVOT study as one resumable command: pairs -> SFT and DPO -> probes -> transplant -> evaluation -> report.

A study spec (YAML: `vars`, `env`, `commands`, `encoders`; `cpu_tiny.yaml`, `qwen25vl_3b.yaml`) holds one command
TEMPLATE per stage; the runner fills in each stage's variables and runs it (no shell: templates are split first, then
each token formatted, `recipe.common.templates.build_argv`). Stages, in order:

| stage | variables it gets | output (done when it exists) |
|---|---|---|
| pairs | data_dir | {data_dir}/pairs.parquet (skipped when `vars.pairs` names a user preference parquet) |
| sft_rows | pairs_file, sft_file | {sft_file} |
| sft, dpo | model (= base), ckpt | the last checkpoint's HF weights under {ckpt} |
| probes | sft_model, dpo_model, probes_dir | {probes_dir}/probes.json |
| dpo_seed<k>, sft_seed<k>, probes_seed<k> | as above, seed = k | the same under {out}/seed_<k>/ |
| transplant_<e> | encoder, encoder_model, transplant_dir | {transplant_dir}/transplant.json |
| stage1_<e>, stage2_<e> | model, ckpt | HF weights under {ckpt} |
| eval_<name> | model, eval_dir, name | {eval_dir}/metrics.json |

Every stage also gets every `vars` entry, `python`, `repo` (this checkout), `out`, `stage` and `ckpt` (its own output
folder; the spec's `env` is formatted with them too, e.g. VERL_FILE_LOGGER_PATH={ckpt}/metrics.jsonl). Stages run
through `recipe.common.steps`: a finished stage writes `{out}/stages/<stage>.json`, and a rerun skips it only if its
command (argv, env) and the inputs it names (data, base model, the checkpoints of earlier stages) are unchanged and its
output exists; otherwise it reruns, saying why, from an emptied {ckpt} (kept when the last run was interrupted with
the same command and inputs: verl resumes). `--set` takes only names under `vars`. The report (`{out}/report`) is
rebuilt at every run (unless `--only` leaves it out); a dry run writes its planned skeleton. Each training seed of
`vars.train_seeds` after the first adds the `<stage>_seed<k>` stages (`seed_stages`).
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from recipe.common.runs import final_hf
from recipe.common.steps import Runner, Step, StepFailed, check_set_names
from recipe.common.templates import SpecError, build_argv

COMMANDS = ("pairs", "sft_rows", "sft", "dpo", "probes", "transplant", "stage1", "stage2", "eval")
TOP_KEYS = {"vars", "env", "commands", "encoders"}
ENCODERS = ("base", "sft", "dpo")
REQUIRED_VARS = ("base", "train", "test", "out")


class StudyError(ValueError):
    """An invalid spec or a stage that failed; the CLI prints one line and exits 2 (1 for a failed stage)."""


@dataclass
class Stage:
    name: str
    command: str
    variables: dict[str, Any]
    done: Callable[[], bool]
    deps: list[str] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)  # what the stage writes besides {ckpt} (never its inputs)


def load_spec(path: str | os.PathLike, sets: Mapping[str, str] = ()) -> dict[str, Any]:
    """Read and check a spec; `sets` (from `--set key=value`) override `vars` (a value starting with `[` is a list)."""
    spec = yaml.safe_load(Path(path).read_text()) or {}
    unknown = set(spec) - TOP_KEYS
    if unknown:
        raise StudyError(f"{path}: unknown top-level keys {sorted(unknown)}; expected {sorted(TOP_KEYS)}")
    spec.setdefault("vars", {})
    spec.setdefault("env", {})
    try:
        check_set_names(dict(sets), spec["vars"])
    except SpecError as err:
        raise StudyError(str(err)) from None
    for key, value in dict(sets).items():
        spec["vars"][key] = yaml.safe_load(value) if value.startswith("[") else value
    missing = [c for c in COMMANDS if c not in spec.get("commands", {})]
    if missing:
        raise StudyError(f"{path}: commands {missing} are missing")
    absent = [v for v in REQUIRED_VARS if spec["vars"].get(v) in (None, "", "???")]
    if absent:
        raise StudyError(f"vars {absent} must be set (in the spec or with --set {absent[0]}=...)")
    encoders = spec.setdefault("encoders", list(ENCODERS))
    if not set(encoders) <= set(ENCODERS) or not encoders:
        raise StudyError(f"encoders {encoders}: choose from {list(ENCODERS)}")
    return spec


def plan(spec: Mapping[str, Any]) -> list[Stage]:
    """The study's stages with their variables (paths derived from `vars.out`)."""
    v = {k: val for k, val in spec["vars"].items()}
    out = Path(v["out"])
    repo = str(Path(__file__).resolve().parents[3])
    base_vars = {"python": sys.executable, "repo": repo, **v, "out": str(out), "data_dir": str(out / "data")}
    user_pairs = bool(v.get("pairs"))
    pairs_file = str(v["pairs"]) if user_pairs else str(out / "data" / "pairs.parquet")
    base_vars |= {"pairs_file": pairs_file, "sft_file": str(out / "data" / "sft.parquet")}
    base_vars |= {"probes_dir": str(out / "probes")}

    def stage(name: str, command: str, done: Callable[[], bool], deps: list[str], **extra: Any) -> Stage:
        extra.setdefault("ckpt", str(out / name))
        return Stage(name, spec["commands"][command], {**base_vars, "stage": name, **extra}, done, deps)

    def trained(ckpt: str) -> Callable[[], bool]:
        return lambda: final_hf(ckpt) is not None

    def model_of(ckpt: str) -> str:
        found = final_hf(ckpt)
        return str(found) if found else f"{ckpt}/<final_hf, after training>"

    stages = []
    pairs_dep = [] if user_pairs else ["pairs"]
    if not user_pairs:
        stages.append(stage("pairs", "pairs", lambda: Path(pairs_file).exists(), []))
        stages[-1].writes.append(base_vars["data_dir"])
    stages.append(stage("sft_rows", "sft_rows", lambda: Path(base_vars["sft_file"]).exists(), pairs_dep))
    stages[-1].writes.append(base_vars["sft_file"])
    ckpts = {name: str(out / name) for name in ("sft", "dpo")}
    # DPO first: the longest stage (with --jobs > 1 the others run beside it)
    stages.append(stage("dpo", "dpo", trained(ckpts["dpo"]), pairs_dep, model=v["base"], ckpt=ckpts["dpo"]))
    stages.append(stage("sft", "sft", trained(ckpts["sft"]), ["sft_rows"], model=v["base"], ckpt=ckpts["sft"]))
    models = {
        "base": lambda: str(v["base"]),
        "sft": lambda: model_of(ckpts["sft"]),
        "dpo": lambda: model_of(ckpts["dpo"]),
    }
    trainer_of = {"base": [], "sft": ["sft"], "dpo": ["dpo"]}
    evaluated = {name: (models[name], trainer_of[name]) for name in ENCODERS}
    for enc in spec["encoders"]:
        pivot = out / f"pivot_{enc}"
        tdir, c1, c2 = str(pivot / "transplant"), str(pivot / "stage1"), str(pivot / "stage2")
        done = lambda tdir=tdir: (Path(tdir) / "transplant.json").exists()  # noqa: E731
        t = stage(f"transplant_{enc}", "transplant", done, trainer_of[enc])
        t.variables |= {"encoder": enc, "transplant_dir": tdir, "ckpt": tdir}
        stages.append(_lazy(t, {"encoder_model": models[enc]}))
        deps = [f"transplant_{enc}", "sft_rows"]
        stages.append(stage(f"stage1_{enc}", "stage1", trained(c1), deps, model=tdir, ckpt=c1, encoder=enc))
        s2 = stage(f"stage2_{enc}", "stage2", trained(c2), [f"stage1_{enc}"], ckpt=c2, encoder=enc)
        stages.append(_lazy(s2, {"model": lambda c1=c1: model_of(c1)}))
        evaluated[f"pivot_{enc}"] = (lambda c2=c2: model_of(c2), [f"stage2_{enc}"])
    probes = stage("probes", "probes", lambda: (out / "probes" / "probes.json").exists(), ["sft", "dpo"])
    stages.append(_lazy(probes, {"sft_model": models["sft"], "dpo_model": models["dpo"]}))
    stages += seed_stages(v, out, stage, trained, model_of, pairs_dep)
    for name, (model, deps) in evaluated.items():
        edir = str(out / "eval" / name)
        e = stage(f"eval_{name}", "eval", lambda edir=edir: (Path(edir) / "metrics.json").exists(), deps)
        e.variables |= {"eval_dir": edir, "name": name, "ckpt": edir}
        stages.append(_lazy(e, {"model": model}))
    return stages


def seed_stages(
    v: Mapping[str, Any],
    out: Path,
    stage: Callable[..., Stage],
    trained: Callable[[str], Callable[[], bool]],
    model_of: Callable[[str], str],
    pairs_dep: list[str],
) -> list[Stage]:
    """`dpo_seed<k>`, `sft_seed<k>`, `probes_seed<k>` for each training seed after the first of `vars.train_seeds`.

    The first seed's stages are the plain `sft` / `dpo` / `probes` (folders `{out}/sft`, ...); seed k trains both arms
    again from the same pairs with `{seed}` = k into `{out}/seed_<k>/` and probes them there, which the report reads as
    one row per seed (DPO − SFT per seed, mean ± std). Transplant and evaluation use the first seed's encoders.
    """
    seeds = [int(k) for k in (v.get("train_seeds") or [v.get("seed", 0)])]
    if len(set(seeds)) != len(seeds):
        raise StudyError(f"vars.train_seeds={seeds} repeats a seed")
    stages = []
    for k in seeds[1:]:
        where = out / f"seed_{k}"
        sft, dpo, probes_dir = str(where / "sft"), str(where / "dpo"), str(where / "probes")
        stages.append(stage(f"dpo_seed{k}", "dpo", trained(dpo), pairs_dep, model=v["base"], ckpt=dpo, seed=k))
        stages.append(stage(f"sft_seed{k}", "sft", trained(sft), ["sft_rows"], model=v["base"], ckpt=sft, seed=k))
        done = lambda d=probes_dir: (Path(d) / "probes.json").exists()  # noqa: E731
        deps = [f"sft_seed{k}", f"dpo_seed{k}"]
        probes = stage(f"probes_seed{k}", "probes", done, deps, probes_dir=probes_dir, ckpt=probes_dir, seed=k)
        lazy = {"sft_model": lambda c=sft: model_of(c), "dpo_model": lambda c=dpo: model_of(c)}
        stages.append(_lazy(probes, lazy))
    return stages


def _lazy(stage: Stage, resolvers: Mapping[str, Callable[[], str]]) -> Stage:
    """Variables known only when the stage runs (a model trained by an earlier stage): resolved in `run_stage`."""
    stage.variables["__lazy__"] = dict(resolvers)
    return stage


def stage_argv(stage: Stage) -> tuple[list[str], dict[str, str]]:
    """The stage's argv and environment (lazy variables resolved now)."""
    variables = {k: val for k, val in stage.variables.items() if k != "__lazy__"}
    for key, resolve in stage.variables.get("__lazy__", {}).items():
        variables[key] = resolve()
    argv = build_argv(stage.command, variables)
    # each env value formatted like one command token (quoted, so it stays one token whatever it holds)
    env = {k: build_argv(shlex.quote(str(val)), variables)[0] for k, val in stage.variables.get("_env", {}).items()}
    return argv, env


def stage_step(stage: Stage, out: Path) -> Step:
    """The stage as a resumable step: marker `{out}/stages/<stage>.json`, log `{out}/logs/<stage>.log`, {ckpt} emptied
    before it reruns."""
    argv, env = stage_argv(stage)
    return Step(
        stage.name,
        argv,
        marker=out / "stages" / f"{stage.name}.json",
        log=out / "logs" / f"{stage.name}.log",
        env=env,
        clean=[Path(stage.variables["ckpt"])],
        writes=[Path(w) for w in stage.writes],
        resumable=True,
        done=stage.done,
    )


def run(
    spec: Mapping[str, Any],
    dry_run: bool = False,
    echo: Callable[[str], None] = print,
    jobs: int = 1,
    only: set[str] | None = None,
) -> dict[str, str]:
    """Run every stage not up to date (up to `jobs` at once, each when its inputs are done); then the report.

    Args:
        only: run just these stages (and write the report only if "report" is among them); the others count as done.

    Returns:
        {stage: "done" | "skipped" | "planned" | "excluded"}.

    Raises:
        StudyError: a stage failed (the others already running are waited for; nothing new starts).
    """
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    from recipe.pivot.study.report import write_report

    out = Path(spec["vars"]["out"])
    stages = plan(spec)
    for stage in stages:
        stage.variables["_env"] = dict(spec.get("env") or {})
    runner = Runner(echo=echo, dry_run=dry_run, state_dirs=[out / "stages", out / "logs"])
    status: dict[str, str] = {s.name: "excluded" for s in stages if only is not None and s.name not in only}
    if dry_run:
        for stage in stages:
            if stage.name not in status:
                status[stage.name] = runner.run(stage_step(stage, out))
        if only is None or "report" in only:
            write_report(spec, out, planned=True)  # the planned report's skeleton
        return status
    pending, running, failed = [s for s in stages if s.name not in status], {}, None
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        while pending or running:
            for stage in list(pending):
                if failed is not None or len(running) >= max(1, jobs):
                    break
                if not all(status.get(d) in ("done", "skipped", "excluded") for d in stage.deps):
                    continue
                pending.remove(stage)
                step = stage_step(stage, out)
                reason = runner.check(step)
                if reason is None:
                    status[stage.name] = runner.run(step)
                    continue
                running[pool.submit(_execute, runner, step, reason)] = stage
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                stage = running.pop(future)
                status[stage.name] = "done" if future.result() else "failed"
                if status[stage.name] == "failed":
                    failed = stage
    if failed is not None:
        raise StudyError(f"stage {failed.name} failed; see {out / 'logs' / (failed.name + '.log')}")
    if pending:
        raise StudyError(f"stages never became ready: {[s.name for s in pending]}")
    if only is None or "report" in only:
        write_report(spec, out)
    return status


def _execute(runner: Runner, step: Step, reason: str) -> bool:
    """Run one stage (its marker written on success). Returns whether it succeeded and produced its output."""
    try:
        runner.run(step, reason)
    except StepFailed as err:
        runner.echo(f"[{step.name}] FAILED: {err}")
        return False
    return True
