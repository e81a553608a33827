"""Resumable steps, shared by every runner (the experiment matrix, both study runners, the demo): each step is one
subprocess (no shell) with its log, and a done-marker that records what produced the result.

A step is skipped only when its marker records the same COMMAND (argv, the environment the step adds, its working
folder and any extra `key`, e.g. a resolved config) and the same fingerprints of its INPUTS, and its outputs exist.
Otherwise it runs again and says why in one line, e.g. `[train] running: command changed: argv[3]: 'a' -> 'b'`.

Inputs are the paths the step names: every argument after the program and every value of the step's environment,
whole or split at `,` `=` `[` `]`, that contains a `/` and exists when the step starts (relative: to the step's `cwd`),
plus its declared `inputs` (the paths a runner declares are relative to the runner's own working folder).
Never an input: a path the step writes (`outputs`, `writes`, `clean`, or inside one), a folder holding the step's
marker or log or the runner's `state_dirs`, or one holding the working folder. Fingerprints: a file named directly,
its sha256 up to 1 MiB, else its size and mtime; a folder, the size and mtime of every file under it (links by target).
They are taken when the step has finished, so a named folder the step also writes into is recorded as it left it. A
step must not name a file that a later step changes (a shared log): it would run again on every rerun.

Before a step runs its `clean` folders are emptied (a rerun never resumes or reuses an earlier command's files),
except that a `resumable` step whose last run was interrupted with the same command and inputs keeps them: verl
resumes from its last checkpoint. Markers are written atomically, logs appended to; a marker of an older runner (no
inputs recorded) makes the step run again.

CLI helpers: `parse_sets` (`--set name=value`, unknown names refused with the known ones), `parse_only` (`--only`).
Command templates: `recipe.common.templates`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recipe.common.process_tree import end_tree
from recipe.common.templates import SpecError

MARKER_VERSION = 2
SMALL_FILE = 1 << 20  # files named directly up to this size are fingerprinted by content
_PIECES = re.compile(r"[,=\[\]]")
INTERRUPTED = "interrupted before it finished"


class StepFailed(RuntimeError):
    """A step's command failed or did not write its outputs; the message names the step and its log.

    Attributes:
        code: the command's exit code (None: it exited 0 but did not write its outputs, or never started).
        log: the step's log.
    """

    def __init__(self, message: str, code: int | None = None, log: Path | None = None) -> None:
        super().__init__(message)
        self.code, self.log = code, log


# ---------------------------------------------------------------------------------------------- CLI helpers
def check_set_names(names: Iterable[str], known: Iterable[str], reserved: Iterable[str] = ()) -> None:
    """Refuse `--set` names the runner sets itself (`reserved`) or that are not `known` (a typo would otherwise be
    ignored silently): SpecError naming the first such name and listing the known ones."""
    known, reserved = set(known), set(reserved)
    for name in names:
        if name in reserved:
            raise SpecError(f"--set {name}: set by the runner, cannot be overridden")
        if name not in known:
            raise SpecError(f"--set {name}: unknown name; known: {', '.join(sorted(known))}")


def parse_sets(items: Iterable[str], known: Iterable[str], reserved: Iterable[str] = ()) -> dict[str, Any]:
    """`--set name=value` items -> {name: value}; a value starting with `[` is a YAML list.

    Raises:
        SpecError: an item without `=`, or a name refused by `check_set_names`.
    """
    import yaml

    sets = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise SpecError(f"--set {item!r}: expected name=value")
        sets[name.strip()] = yaml.safe_load(value) if value.startswith("[") else value
    check_set_names(sets, known, reserved)
    return sets


def parse_only(text: str | None, known: Iterable[str]) -> set[str] | None:
    """`--only a,b` -> {"a", "b"} (None: everything). Raises SpecError naming an unknown step and the known ones."""
    if text is None:
        return None
    names, known = {t.strip() for t in text.split(",") if t.strip()}, list(known)
    unknown = sorted(names - set(known))
    if unknown or not names:
        raise SpecError(f"--only {text!r}: unknown steps {unknown}; known: {', '.join(known)}")
    return names


# ---------------------------------------------------------------------------------------------- fingerprints
def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def fingerprint(path: str | os.PathLike, skip: Callable[[str], bool] = lambda p: False) -> str:
    """What a rerun compares of an input: see the module docstring. A missing path gives "missing"."""
    path = os.fspath(path)
    if os.path.isfile(path):
        st = os.stat(path)
        if st.st_size <= SMALL_FILE:
            with open(path, "rb") as f:
                return "sha256:" + hashlib.sha256(f.read()).hexdigest()[:24]
        return f"size={st.st_size},mtime_ns={st.st_mtime_ns}"
    if not os.path.isdir(path):
        return "missing"
    digest, files = hashlib.sha256(), 0
    for root, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not skip(os.path.join(root, d)))
        for name in sorted(names) + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            full = os.path.join(root, name)
            if skip(full):
                continue
            rel = os.path.relpath(full, path)
            if os.path.islink(full):
                digest.update(f"{rel}->{os.readlink(full)}\n".encode())
            if os.path.isfile(full):
                st = os.stat(full)
                digest.update(f"{rel}:{st.st_size}:{st.st_mtime_ns}\n".encode())
                files += 1
    return f"dir:{files}:{digest.hexdigest()[:24]}"


# ---------------------------------------------------------------------------------------------- one step
@dataclass
class Step:
    """One command of a runner, with what makes its result reusable (see the module docstring)."""

    name: str
    argv: Sequence[str]
    marker: Path
    log: Path
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    key: Any = None
    inputs: Sequence[Path] = ()
    outputs: Sequence[Path] = ()
    writes: Sequence[Path] = ()
    clean: Sequence[Path] = ()
    resumable: bool = False
    stream: bool = False
    done: Callable[[], bool] | None = None

    def command(self) -> dict[str, Any]:
        """What the marker keys on besides the inputs (JSON-normalised)."""
        env = {str(k): str(v) for k, v in sorted(self.env.items())}
        cmd = {"argv": [str(a) for a in self.argv], "env": env, "cwd": self.cwd, "key": self.key}
        return json.loads(json.dumps(cmd))


def _difference(old: Any, new: Any, where: str) -> str | None:
    """Where two JSON values first differ, in words (None if equal)."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new), key=str):
            if k not in old or k not in new:
                return f"{where}.{k} {'added' if k in new else 'removed'}"
            found = _difference(old[k], new[k], f"{where}.{k}")
            if found:
                return found
        return None
    if isinstance(old, list) and isinstance(new, list):
        for i, (a, b) in enumerate(zip(old, new)):
            found = _difference(a, b, f"{where}[{i}]")
            if found:
                return found
        return None if len(old) == len(new) else f"{where}: {len(old)} -> {len(new)} items"
    if old == new:
        return None

    def short(v: Any) -> str:
        text = repr(v)
        return text if len(text) <= 90 else text[:43] + "..." + text[-43:]

    return f"{where}: {short(old)} -> {short(new)}"


class Runner:
    """Runs steps: skips the up-to-date ones, reruns the others saying why, records each finished one.

    Args:
        echo: where the one-line messages go.
        dry_run: say what would run, run and write nothing.
        state_dirs: folders of the runner's markers and logs (never inputs).
        env: added to every step's environment, not part of any step's key (e.g. PYTHONUNBUFFERED).
        own_session: each command in its own session, its whole process tree ended on any interruption (Ray's local
            cluster, torchrun); otherwise only the command is killed (Ctrl-C reaches the tree through the terminal).
        progress: for steps with `stream`, the log lines containing one of these are echoed too.
        stop_grace_s: on an interruption, seconds the command gets after SIGTERM to end its own children (torchrun
            ends its workers, which live in their own sessions) before its whole tree is SIGKILLed
            (`recipe.common.process_tree.end_tree`).
    """

    def __init__(
        self,
        echo: Callable[[str], None] = print,
        dry_run: bool = False,
        state_dirs: Sequence[str | os.PathLike] = (),
        env: Mapping[str, str] | None = None,
        own_session: bool = False,
        progress: Sequence[str] = (),
        stop_grace_s: float = 10.0,
    ) -> None:
        self.echo, self.dry_run, self.env = echo, dry_run, dict(env or {})
        self.state_dirs = [os.path.abspath(d) for d in state_dirs]
        self.own_session, self.progress, self.stop_grace_s = own_session, tuple(progress), stop_grace_s
        self.seconds: dict[str, float] = {}

    # ------------------------------------------------------------------ deciding
    @staticmethod
    def _named(step: Step, path: str) -> str:
        """A path named in the command: relative to the step's working folder."""
        return os.path.abspath(os.path.join(step.cwd or os.getcwd(), path))

    def named_inputs(self, step: Step) -> list[str]:
        """The existing paths that are inputs of the step now (see the module docstring), absolute, sorted."""
        written = [os.path.abspath(p) for p in (*step.outputs, *step.writes, *step.clean)]
        holders = [os.path.abspath(step.marker), os.path.abspath(step.log), os.path.abspath(step.cwd or os.getcwd())]
        found = {os.path.abspath(p) for p in step.inputs}
        for token in [*map(str, step.argv[1:]), *map(str, step.env.values())]:
            for piece in {token, *_PIECES.split(token)}:
                if "/" in piece.strip():
                    found.add(self._named(step, piece.strip()))
        return sorted(
            p
            for p in found
            if os.path.exists(p)
            and not any(_inside(p, w) for w in written)
            and not any(_inside(h, p) for h in [*holders, *self.state_dirs])
            and not any(_inside(p, s) for s in self.state_dirs)
        )

    def _skip(self, step: Step) -> Callable[[str], bool]:
        own = {os.path.abspath(step.marker), os.path.abspath(step.log)}
        return lambda p: p in own or any(_inside(p, s) for s in self.state_dirs)

    def _record(self, step: Step) -> dict[str, Any] | None:
        try:
            record = json.loads(step.marker.read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) and record.get("version") == MARKER_VERSION else None

    def check(self, step: Step) -> str | None:
        """None when the step's result can be reused; else why it must run (one line)."""
        if not step.marker.exists():
            return "not run before"
        record = self._record(step)
        if record is None:
            return "marker unreadable or written by an older runner (no inputs recorded)"
        changed = _difference({k: record.get(k) for k in step.command()}, step.command(), "command")
        if changed:
            return "command changed: " + changed.removeprefix("command.")
        if record.get("state") == "done":
            missing = [str(p) for p in step.outputs if not os.path.exists(p)]
            if missing:
                return f"output missing: {missing[0]}"
            if step.done is not None and not step.done():
                return "its output is incomplete"
        for path, before in sorted((record.get("inputs") or {}).items()):
            now = fingerprint(path, self._skip(step))
            if now != before:
                return f"input {'missing' if now == 'missing' else 'changed'}: {path}"
        return None if record.get("state") == "done" else INTERRUPTED

    # ------------------------------------------------------------------ running
    def run(self, step: Step, reason: str | None = None) -> str:
        """Run `step` unless up to date (`reason` forces a run). Returns "skipped", "planned" (dry run) or "done".

        Raises:
            StepFailed: the command failed or did not write its outputs.
        """
        reason = reason or self.check(step)
        if reason is None:
            self.echo(f"[{step.name}] done before, skipped")
            return "skipped"
        if self.dry_run:
            env = "".join(f"{k}={shlex.quote(str(v))} " for k, v in step.env.items())
            self.echo(f"[{step.name}] would run ({reason}): {env}{shlex.join(map(str, step.argv))}")
            return "planned"
        candidates = self.named_inputs(step)
        resume = step.resumable and reason == INTERRUPTED
        self._prepare(step, resume)
        inputs = {p: fingerprint(p, self._skip(step)) for p in candidates}
        self._write_marker(step, self._marker(step, "running", inputs))
        self.echo(f"[{step.name}] running: {reason}  (log: {step.log})")
        started = time.monotonic()
        code = self.launch(step)
        took = round(time.monotonic() - started, 1)
        if code != 0:
            raise StepFailed(f"step {step.name} failed with exit code {code}; see {step.log}", code, step.log)
        missing = [str(p) for p in step.outputs if not os.path.exists(p)]
        if missing or (step.done is not None and not step.done()):
            message = f"step {step.name} exited 0 but did not write {missing or 'its output'}; see {step.log}"
            raise StepFailed(message, None, step.log)
        inputs = {p: fingerprint(p, self._skip(step)) for p in candidates}
        self._write_marker(step, {**self._marker(step, "done", inputs), "seconds": took})
        self.seconds[step.name] = took
        self.echo(f"[{step.name}] done in {took:.0f} s")
        return "done"

    @staticmethod
    def _write_marker(step: Step, record: Mapping[str, Any]) -> None:
        from verl_ext.evaluation.runner import write_json_atomic  # torch-free CLI start: imported when first needed

        write_json_atomic(step.marker, record)

    def _marker(self, step: Step, state: str, inputs: Mapping[str, str]) -> dict[str, Any]:
        return {"version": MARKER_VERSION, "state": state, **step.command(), "inputs": dict(inputs)}

    def _prepare(self, step: Step, resume: bool) -> None:
        """Empty `clean` folders (unless resuming) and remove stale output files and the old marker."""
        step.marker.unlink(missing_ok=True)
        for folder in [] if resume else step.clean:
            path = os.path.abspath(folder)
            holders = [os.path.abspath(step.marker), os.path.abspath(step.log), os.path.abspath(step.cwd or ".")]
            if any(_inside(h, path) for h in holders):
                raise StepFailed(f"step {step.name}: refusing to empty {path}: it holds the step's log, marker or cwd")
            shutil.rmtree(path, ignore_errors=True)
            Path(path).mkdir(parents=True)
        for out in step.outputs:
            path = Path(out)
            if path.is_file() or path.is_symlink():
                path.unlink()

    def launch(self, step: Step) -> int:
        """Run the command (no shell), stdout and stderr appended to its log; returns the exit code (127: no such
        program). Any interruption (Ctrl-C, SIGTERM raised as SystemExit) ends the command, then propagates."""
        step.log.parent.mkdir(parents=True, exist_ok=True)
        argv = [str(a) for a in step.argv]
        env = {**os.environ, **self.env, **{str(k): str(v) for k, v in step.env.items()}}
        stream = step.stream and bool(self.progress)
        with step.log.open("a", encoding="utf-8") as f:
            f.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} $ {shlex.join(argv)}\n")
            f.flush()
            try:
                proc = subprocess.Popen(
                    argv,
                    stdout=subprocess.PIPE if stream else f,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=step.cwd,
                    text=True,
                    start_new_session=self.own_session,
                )
            except OSError as err:  # e.g. the program does not exist
                f.write(f"# could not start: {err}\n")
                return 127
            try:
                if stream:
                    assert proc.stdout is not None
                    for line in proc.stdout:
                        f.write(line)
                        if any(m in line for m in self.progress):
                            self.echo(f"  {line.rstrip()[-160:]}")
                return proc.wait()
            except BaseException:
                end_tree(proc, self.own_session, self.stop_grace_s)
                raise
