"""Prove that upstream/verl-0.9.1-domain_grpo.patch applies to the installed verl 0.9.1 and works.

    python upstream/prove_patch.py [--keep DIR] [--json PATH] [--no-project-tests]

Copies the installed `verl/` package twice into a temporary folder, puts verl's upstream CPU tests
(`upstream/tests/`, vendored from verl v0.9.0) beside each copy, and:
  1. applies the patch to one copy with `git apply` (every file but `docs/index.rst`, which only a verl checkout has);
  2. runs, in one pytest session as verl's CPU CI does, (a) the patch's own tests and (b) verl's
     `tests/trainer/ppo/*_on_cpu.py` against the patched copy: both must pass;
  3. runs the patch's tests against the unpatched copy (only the patch's test file added): they must fail;
  4. runs the project's own flavour-aware tests (estimator, trainer mode) with the patched copy first on the path:
     the recipe must hand D_i through verl's own compute_advantage there (they must pass).
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
PATCH = HERE / "verl-0.9.1-domain_grpo.patch"
VENDORED_TESTS = HERE / "tests"  # verl v0.9.0's tests/trainer/ppo/*_on_cpu.py, with their package __init__ files
REPO_ONLY = ("docs/index.rst",)  # files the patch changes that the wheel does not ship
PATCH_TESTS = "tests/trainer/ppo/test_domain_grpo_on_cpu.py"
UPSTREAM_TESTS = "tests/trainer/ppo"
PROJECT_TESTS = ("tests/verl_ext/test_estimator_on_cpu.py", "tests/recipe/test_trainer_mode_on_cpu.py")
VERL_VERSION = "0.9.1"
PYTEST_TIMEOUT_S = 600


class UsageError(Exception):
    """A problem with the set-up or the arguments (one line on stderr, exit 2)."""


@dataclass
class Check:
    name: str
    expected: str  # "applies", "pass" or "fail"
    ok: bool
    result: str
    seconds: float


def installed_verl() -> Path:
    """The installed `verl/` package folder (found without importing verl), checked to be 0.9.1."""
    spec = importlib.util.find_spec("verl")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("verl is not installed in this Python; install verl==0.9.1 (see the project README)")
    folder = Path(next(iter(spec.submodule_search_locations)))
    version_file = folder / "version" / "version"
    version = version_file.read_text().strip() if version_file.exists() else "unknown"
    if version != VERL_VERSION:
        raise UsageError(f"the patch is for verl {VERL_VERSION}, but {folder} is verl {version}")
    return folder


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(cwd.parent)}
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)


def build_tree(dest: Path, verl_dir: Path) -> None:
    """`dest/verl` (a copy of the wheel's package) + `dest/tests` (verl's vendored CPU tests) + pytest.ini, as a
    git repository with that state committed (so `git diff` in a kept tree shows what the patch changed)."""
    shutil.copytree(verl_dir, dest / "verl", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(VENDORED_TESTS, dest / "tests", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.md"))
    # verl's CPU CI: `echo 'python_files = *_on_cpu.py' >> pytest.ini; pytest -s -x --asyncio-mode=auto tests/`
    (dest / "pytest.ini").write_text("[pytest]\npython_files = *_on_cpu.py\n")
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=prove", "-c", "user.email=prove@local", "commit"]):
        done = _git([*args, "-q", "-m", "verl 0.9.1 wheel + vendored tests"] if args[-1] == "commit" else args, dest)
        if done.returncode != 0:
            raise UsageError(f"git {' '.join(args)} failed in {dest}: {done.stderr.strip()}")
    (dest / ".git" / "info" / "exclude").write_text("pytest.ini\n.pytest_cache/\n__pycache__/\n*.xml\n")


def apply_patch(tree: Path, include: str | None = None) -> tuple[bool, str]:
    """`git apply` the patch to `tree` (only the paths matching `include`, if given); (applied, message)."""
    args = ["apply", "--whitespace=error-all"] + [f"--exclude={path}" for path in REPO_ONLY]
    if include is not None:
        args.append(f"--include={include}")
    for step in (["--check", "-v"], []):
        done = _git([*args, *step, str(PATCH)], tree)
        if done.returncode != 0:
            return False, (done.stderr or done.stdout).strip().splitlines()[-1]
    changed = _git(["status", "--porcelain"], tree).stdout.splitlines()
    return True, f"{len(changed)} files changed or added"


def _clean_env(pythonpath: list[Path]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VERL_USE_EXTERNAL_MODULES", "PYTHONPATH")}
    env.update({"PYTHONPATH": os.pathsep.join(str(p) for p in pythonpath), "HF_HUB_OFFLINE": "1"})
    env.update({"TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled", "PYTHONDONTWRITEBYTECODE": "1"})
    return env


def run_pytest(args: list[str], cwd: Path, pythonpath: list[Path], junit: Path) -> tuple[int, str]:
    """pytest in a subprocess of its own session (killed with its children on timeout or interrupt)."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", *args]
    proc = subprocess.Popen(
        command, cwd=cwd, env=_clean_env(pythonpath), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=PYTEST_TIMEOUT_S)
    except BaseException:  # timeout, SIGINT, SIGTERM: leave nothing running
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return proc.returncode, out


def junit_counts(junit: Path) -> dict[str, Counter]:
    """Per test file: Counter of passed / failed / error / skipped, from pytest's junit XML (written by us)."""
    per_file: dict[str, Counter] = {}
    if not junit.exists():
        return per_file
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        module = case.get("classname", "").split(".")
        name = next((part for part in module if part.startswith("test_")), case.get("file", "?"))
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
        per_file.setdefault(name, Counter())[outcome] += 1
    return per_file


def summarise(counts: Counter) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no tests ran"


def prove(workdir: Path, project_tests: bool) -> list[Check]:
    """Run every check in `workdir` (which must be empty); returns them in order."""
    verl_dir = installed_verl()
    checks: list[Check] = []

    def timed(name: str, expected: str, fn) -> None:
        start = time.monotonic()
        ok, result = fn()
        checks.append(Check(name, expected, ok, result, round(time.monotonic() - start, 1)))
        print(f"[{'ok' if ok else 'UNEXPECTED'}] {name}: {result} ({checks[-1].seconds} s)", flush=True)

    patched, stock = workdir / "patched", workdir / "stock"
    for tree in (patched, stock):
        build_tree(tree, verl_dir)
    timed("patch applies to a copy of the verl 0.9.1 wheel (git apply)", "applies", lambda: apply_patch(patched))
    if not checks[-1].ok:
        return checks

    # (a) and (b) in one session, as verl's CPU CI runs tests/ (test_core_algos_on_cpu.py empties the estimator
    # registry in its tearDown, so the order matters); the junit report splits the outcome per file.
    start = time.monotonic()
    junit = workdir / "patched.xml"
    rc, out = run_pytest(["-x", UPSTREAM_TESTS], patched, [patched], junit)
    seconds = round(time.monotonic() - start, 1)
    counts = junit_counts(junit)
    ours = counts.pop(Path(PATCH_TESTS).stem, Counter())
    for name, got in (
        ("(a) the patch's tests", ours),
        ("(b) verl's tests/trainer/ppo/*_on_cpu.py", sum(counts.values(), Counter())),
    ):
        ok = rc == 0 and got["passed"] > 0 and not got["failed"] and not got["error"]
        checks.append(Check(f"{name}, patched verl (one session)", "pass", ok, summarise(got), seconds))
        print(f"[{'ok' if ok else 'UNEXPECTED'}] {checks[-1].name}: {checks[-1].result} ({seconds} s)", flush=True)
    if rc != 0:
        print(out[-4000:], flush=True)

    def stock_fails() -> tuple[bool, str]:
        applied, message = apply_patch(stock, include=PATCH_TESTS)  # the test file only, on unpatched verl
        if not applied:
            return False, f"could not add the patch's test file: {message}"
        junit = workdir / "stock.xml"
        rc, out = run_pytest([PATCH_TESTS], stock, [stock], junit)
        reason = "ImportError: DOMAIN_GRPO / compute_domain_grpo_outcome_advantage" if "ImportError" in out else ""
        counts = summarise(sum(junit_counts(junit).values(), Counter()))
        return rc != 0, f"pytest rc {rc}; {reason or counts}"

    timed("the patch's tests, unpatched verl 0.9.1 (must fail)", "fail", stock_fails)

    if project_tests:

        def project_session() -> tuple[bool, str]:
            junit = workdir / "project.xml"
            rc, out = run_pytest(list(PROJECT_TESTS), REPO, [patched, REPO], junit)
            if rc != 0:
                print(out[-4000:], flush=True)
            return rc == 0, f"pytest rc {rc}; {summarise(sum(junit_counts(junit).values(), Counter()))}"

        timed(
            f"project tests ({', '.join(Path(t).name for t in PROJECT_TESTS)}), patched verl", "pass", project_session
        )
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
    parser.add_argument("--keep", type=Path, help="build the trees in this new folder and keep them (for editing)")
    parser.add_argument("--json", type=Path, help="also write the checks as JSON to this file")
    parser.add_argument("--no-project-tests", action="store_true", help="skip the project's tests on patched verl")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_on_signal)
    try:
        if args.keep is not None:
            if args.keep.exists():
                raise UsageError(f"--keep {args.keep} already exists; name a new folder")
            args.keep.mkdir(parents=True)
            workdir = args.keep.resolve()
        else:
            workdir = Path(tempfile.mkdtemp(prefix="verl-domain-grpo-"))
        if shutil.which("git") is None:
            raise UsageError("git is needed to apply the patch (git apply); install git")
        try:
            checks = prove(workdir, project_tests=not args.no_project_tests)
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
        print(f"\ntrees kept in {workdir} (patched/ and stock/; `git -C {workdir}/patched diff` shows the patch)")
    if args.json is not None:
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps([asdict(c) for c in checks], indent=2))
        tmp.replace(args.json)  # atomic
    return 0 if checks and all(c.ok for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
