"""Prove that the verl patches in upstream/ apply, alone and together, and change no outcome of verl's own tests.

    python upstream/prove_patch.py [--verl-src DIR] [--exclude PATH] [--ignore PATH] [--keep DIR] [--json PATH]
                                   [--no-project-tests]

Builds four trees, each a copy of verl with verl's CPU tests beside it: unpatched, each patch alone, both patches.
Without `--verl-src` the copy is the installed verl 0.9.1 package plus the tests vendored in `upstream/tests/` (verl
v0.9.0's; the wheel ships no tests); with `--verl-src DIR` it is the checkout's `verl/`, `tests/`, `docs/` and
`examples/` (any version, e.g. verl's main). Then:
  1. `git apply`s the patches to each patched tree (on the wheel every file but `docs/index.rst`, which only a checkout
     has; `--exclude PATH` leaves out more, e.g. a hunk a newer verl has made unnecessary);
  2. runs, in one pytest session per tree as verl's CPU CI does, verl's tests near the patched code (`VERL_TESTS`)
     and the applied patches' own tests: the patches' tests must pass, and every verl test must end exactly as it
     does on the unpatched tree (same tests, same outcome each);
  3. adds each patch's test files alone to the unpatched tree and runs them: they must fail there;
  4. (installed verl only) runs the project's own flavour-aware tests (`PROJECT_TESTS`) with the doubly patched tree
     first on the path: the recipe must then take verl's own `domain_grpo` and `freeze_vision_tower` paths.
Prints a markdown table; exit 0 when every check came out as expected, 1 when one did not, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENDORED_TESTS = HERE / "tests"  # verl v0.9.0's CPU tests near the patched code, with their package __init__ files
PATCHES = {  # name: (patch file, its own test files)
    "domain_grpo": (HERE / "verl-0.9.1-domain_grpo.patch", ("tests/trainer/ppo/test_domain_grpo_on_cpu.py",)),
    "freeze_vision_tower": (
        HERE / "verl-0.9.1-freeze_vision_tower.patch",
        ("tests/workers/engine/test_freeze_vision_tower_on_cpu.py",),
    ),
}
VARIANTS = {"stock": (), **{name: (name,) for name in PATCHES}, "both": tuple(PATCHES)}
# verl's own tests of the code the patches touch: core_algos / ray_trainer / v1 trainer, utils/model, worker configs
VERL_TESTS = ("tests/trainer/ppo", "tests/utils/test_model_on_cpu.py", "tests/workers/config")
WHEEL_ONLY_EXCLUDES = ("docs/index.rst",)  # files the patches change that the wheel does not ship
CHECKOUT_DIRS = ("verl", "tests", "docs", "examples")
PROJECT_TESTS = (
    "tests/verl_ext/test_estimator_on_cpu.py",
    "tests/recipe/test_trainer_mode_on_cpu.py",
    "tests/upstream/test_freeze_paths_on_cpu.py",
)
VERL_VERSION = "0.9.1"
PYTEST_TIMEOUT_S = 900
TIMED_OUT = 124  # run_pytest's return code when it killed pytest at PYTEST_TIMEOUT_S


class UsageError(Exception):
    """A problem with the set-up or the arguments (one line on stderr, exit 2)."""


@dataclass
class Check:
    name: str
    expected: str  # "applies", "pass", "fail", "same" (as unpatched) or "reference"
    ok: bool
    result: str
    seconds: float


def installed_verl() -> Path:
    """The installed `verl/` package folder (found without importing verl), checked to be 0.9.1."""
    spec = importlib.util.find_spec("verl")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("verl is not installed in this Python; install verl==0.9.1 (see the project README)")
    folder = Path(next(iter(spec.submodule_search_locations)))
    version = verl_version(folder)
    if version != VERL_VERSION:
        raise UsageError(
            f"the patches are made for verl {VERL_VERSION}, but {folder} is verl {version}; use --verl-src"
        )
    return folder


def verl_version(package: Path) -> str:
    version_file = package / "version" / "version"
    return version_file.read_text().strip() if version_file.exists() else "unknown"


def checkout_source(src: Path) -> Path:
    """`--verl-src DIR`: a verl source checkout (its `verl/` package and `tests/` folder must be there)."""
    src = src.resolve()
    for needed in ("verl/__init__.py", "tests"):
        if not (src / needed).exists():
            raise UsageError(f"--verl-src {src} is not a verl source checkout (no {needed})")
    return src


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(cwd.parent)}
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)


def build_tree(dest: Path, wheel: Path | None, src: Path | None) -> None:
    """`dest` = verl (the wheel's package + vendored tests, or the checkout's folders) + pytest.ini, as a git
    repository with that state committed (so `git diff` in a kept tree shows what the patches changed)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".git")
    dest.mkdir(parents=True)
    if src is not None:
        for name in CHECKOUT_DIRS:
            if (src / name).is_dir():
                shutil.copytree(src / name, dest / name, ignore=ignore)
    else:
        shutil.copytree(wheel, dest / "verl", ignore=ignore)
        shutil.copytree(VENDORED_TESTS, dest / "tests", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.md"))
    # verl's CPU CI: `echo 'python_files = *_on_cpu.py' >> pytest.ini; pytest -s -x --asyncio-mode=auto tests/`
    (dest / "pytest.ini").write_text("[pytest]\npython_files = *_on_cpu.py\n")
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=prove", "-c", "user.email=prove@local", "commit"]):
        done = _git([*args, "-q", "-m", "verl + its CPU tests"] if args[-1] == "commit" else args, dest)
        if done.returncode != 0:
            raise UsageError(f"git {' '.join(args)} failed in {dest}: {done.stderr.strip()}")
    (dest / ".git" / "info" / "exclude").write_text("pytest.ini\n.pytest_cache/\n__pycache__/\n*.xml\n")


def apply_patch(tree: Path, patch: Path, excludes: tuple[str, ...], include: str | None = None) -> tuple[bool, str]:
    """`git apply` `patch` to `tree` (only the paths matching `include`, if given); (applied, message)."""
    args = ["apply", "--whitespace=error-all"] + [f"--exclude={path}" for path in excludes]
    if include is not None:
        args.append(f"--include={include}")
    for step in (["--check", "-v"], []):
        done = _git([*args, *step, str(patch)], tree)
        if done.returncode != 0:
            return False, (done.stderr or done.stdout).strip().splitlines()[-1]
    return True, "applied"


def _clean_env(pythonpath: list[Path]) -> dict[str, str]:
    # verl's plugin env names modules of the caller's project (VERL_PLATFORM=cpu needs verl_ext's platform): a tree
    # under test imports only itself
    dropped = ("VERL_USE_EXTERNAL_MODULES", "VERL_PLATFORM", "PYTHONPATH")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update({"PYTHONPATH": os.pathsep.join(str(p) for p in pythonpath), "HF_HUB_OFFLINE": "1"})
    env.update({"TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled", "PYTHONDONTWRITEBYTECODE": "1"})
    return env


def run_pytest(args: list[str], cwd: Path, pythonpath: list[Path], junit: Path) -> tuple[int, str]:
    """pytest in a subprocess of its own session (killed with its children on timeout or interrupt); (rc, output),
    rc `TIMED_OUT` when it ran past `PYTEST_TIMEOUT_S`."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", *args]
    proc = subprocess.Popen(
        command, cwd=cwd, env=_clean_env(pythonpath), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=PYTEST_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return TIMED_OUT, f"pytest timed out after {PYTEST_TIMEOUT_S} s and was killed (use --ignore for hanging tests)"
    except BaseException:  # SIGINT, SIGTERM: leave nothing running
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return proc.returncode, out


def junit_outcomes(junit: Path) -> dict[str, str]:
    """{test id: passed / failed / error / skipped} from pytest's junit XML (written by us)."""
    outcomes: dict[str, str] = {}
    if not junit.exists():
        return outcomes
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
        outcomes[f"{case.get('classname', '')}::{case.get('name', '')}"] = outcome
    return outcomes


def summarise(outcomes: dict[str, str]) -> str:
    counts = Counter(outcomes.values())
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no tests ran"


def _is_patch_test(test_id: str, patch_tests: tuple[str, ...]) -> bool:
    return any(Path(path).stem in test_id.split("::")[0].split(".") for path in patch_tests)


def prove(
    workdir: Path, src: Path | None, project_tests: bool, extra_excludes: tuple[str, ...], ignores: tuple[str, ...] = ()
) -> list[Check]:
    """Run every check in `workdir` (which must be empty); returns them in order. `ignores`: verl test paths left out
    of every session (pytest `--ignore`), e.g. tests that start Ray."""
    wheel = None if src is not None else installed_verl()
    excludes = extra_excludes + (() if src is not None else WHEEL_ONLY_EXCLUDES)
    label = f"verl {verl_version(src / 'verl')} checkout" if src is not None else f"the verl {VERL_VERSION} wheel"
    checks: list[Check] = []
    ready: set[str] = set()  # variants whose patches applied

    def record(name: str, expected: str, ok: bool, result: str, start: float) -> None:
        checks.append(Check(name, expected, ok, result, round(time.monotonic() - start, 1)))
        print(f"[{'ok' if ok else 'UNEXPECTED'}] {name}: {result} ({checks[-1].seconds} s)", flush=True)

    reference: dict[str, str] | None = None
    for variant, names in VARIANTS.items():
        tree = workdir / variant
        build_tree(tree, wheel, src)
        start = time.monotonic()
        messages = [apply_patch(tree, PATCHES[name][0], excludes) for name in names]
        if names:
            applied = all(ok for ok, _ in messages)
            changed = len(_git(["status", "--porcelain"], tree).stdout.splitlines())
            detail = f"{changed} files changed or added" if applied else "; ".join(m for ok, m in messages if not ok)
            record(f"{'+'.join(names)}: applies to {label}", "applies", applied, detail, start)
            if not applied:
                continue
        ready.add(variant)
        start = time.monotonic()
        own = tuple(test for name in names for test in PATCHES[name][1])
        junit = workdir / f"{variant}.xml"
        rc, out = run_pytest([*VERL_TESTS, *own, *(f"--ignore={path}" for path in ignores)], tree, [tree], junit)
        if rc == TIMED_OUT:
            record(f"{'+'.join(names) or 'unpatched'}: verl's tests", "pass", False, out, start)
            if reference is None:
                return checks  # nothing to compare the patched trees with
            continue
        outcomes = junit_outcomes(junit)
        verl = {k: v for k, v in outcomes.items() if not _is_patch_test(k, own)}
        if reference is None:  # the unpatched tree comes first
            reference = verl
            # a reference that did not collect (an error) would make every patched tree look "the same"
            collected = "passed" in verl.values() and "error" not in verl.values()
            record(f"unpatched: verl's tests ({', '.join(VERL_TESTS)})", "reference", collected, summarise(verl), start)
            if not collected:
                print(out[-4000:], flush=True)
            continue
        ours = {k: v for k, v in outcomes.items() if _is_patch_test(k, own)}
        ok = bool(ours) and set(ours.values()) <= {"passed", "skipped"} and "passed" in ours.values()
        record(f"{'+'.join(names)}: the patches' own tests", "pass", ok, summarise(ours), start)
        differ = sorted(k for k in reference.keys() | verl.keys() if reference.get(k) != verl.get(k))
        result = summarise(verl) + ("; identical per test" if not differ else f"; {len(differ)} differ: {differ[:3]}")
        record(f"{'+'.join(names)}: verl's tests, same outcome as unpatched", "same", not differ, result, start)
        if not ok or differ:
            print(out[-4000:], flush=True)

    stock = workdir / "stock"
    for name, (patch, tests) in PATCHES.items():
        start = time.monotonic()
        for test in tests:
            applied, message = apply_patch(stock, patch, excludes, include=test)  # the test file only
            if not applied:
                record(f"{name}'s tests, unpatched verl", "fail", False, f"could not add {test}: {message}", start)
                break
        else:
            rc, out = run_pytest(list(tests), stock, [stock], workdir / f"stock-{name}.xml")
            reason = "ImportError" if "ImportError" in out else summarise(junit_outcomes(workdir / f"stock-{name}.xml"))
            failed = rc not in (0, TIMED_OUT)  # a timeout proves nothing
            record(f"{name}'s tests, unpatched verl (must fail)", "fail", failed, f"pytest rc {rc}; {reason}", start)

    if project_tests and src is None and "both" in ready:
        start = time.monotonic()
        rc, out = run_pytest(list(PROJECT_TESTS), REPO, [workdir / "both", REPO], workdir / "project.xml")
        if rc != 0:
            print(out[-4000:], flush=True)
        result = f"pytest rc {rc}; {summarise(junit_outcomes(workdir / 'project.xml'))}"
        names = ", ".join(Path(t).name for t in PROJECT_TESTS)
        record(f"project tests ({names}), both patches", "pass", rc == 0, result, start)
    return checks


def markdown(checks: list[Check]) -> str:
    lines = ["| check | expected | outcome | as expected | time (s) |", "|---|---|---|---|---|"]
    for c in checks:
        lines.append(f"| {c.name} | {c.expected} | {c.result} | {'yes' if c.ok else 'NO'} | {c.seconds} |")
    return "\n".join(lines)


def _raise_on_signal(signum, frame):  # SIGTERM -> the same clean-up path as Ctrl-C
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verl-src", type=Path, help="a verl source checkout to patch instead of the installed wheel")
    parser.add_argument("--exclude", action="append", default=[], help="a path the patches leave alone (repeatable)")
    parser.add_argument("--ignore", action="append", default=[], help="a verl test path not to run (repeatable)")
    parser.add_argument("--keep", type=Path, help="build the trees in this new folder and keep them (for editing)")
    parser.add_argument("--json", type=Path, help="also write the checks as JSON to this file")
    parser.add_argument("--no-project-tests", action="store_true", help="skip the project's tests on patched verl")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_on_signal)
    try:
        src = checkout_source(args.verl_src) if args.verl_src is not None else None
        if shutil.which("git") is None:
            raise UsageError("git is needed to apply the patches (git apply); install git")
        if args.keep is not None:
            if args.keep.exists():
                raise UsageError(f"--keep {args.keep} already exists; name a new folder")
            args.keep.mkdir(parents=True)
            workdir = args.keep.resolve()
        else:
            workdir = Path(tempfile.mkdtemp(prefix="verl-patches-"))
        try:
            checks = prove(workdir, src, not args.no_project_tests, tuple(args.exclude), tuple(args.ignore))
        finally:
            if args.keep is None:
                shutil.rmtree(workdir, ignore_errors=True)
    except UsageError as err:
        print(f"prove_patch: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("prove_patch: interrupted", file=sys.stderr)
        return 130
    print("\n" + markdown(checks))
    if args.keep is not None:
        print(f"\ntrees kept in {workdir} (stock/, {', '.join(PATCHES)}/, both/; `git -C DIR diff` shows a patch)")
    if args.json is not None:
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps([asdict(c) for c in checks], indent=2))
        tmp.replace(args.json)  # atomic
    return 0 if checks and all(c.ok for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
