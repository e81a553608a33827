"""An interrupted step ends its whole tree, including a worker in its own session (torchrun's layout): a SIGTERM to a
pipeline used to SIGKILL the launcher's group only and leave verl's SFT trainer running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recipe.common.process_tree import descendants, parent_pids

REPO = Path(__file__).resolve().parents[3]
# A launcher like torchrun: its worker in a new session (torchrun's SubprocessHandler does start_new_session=True).
# `polite`: on SIGTERM it ends the worker's group itself and exits (torchrun's behaviour); otherwise it ignores
# SIGTERM (a launcher that does not clean up: only the noted descendants' SIGKILL ends the worker).
LAUNCHER = """
import os, signal, subprocess, sys, time
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
if sys.argv[2] == "polite":
    def stop(signum, frame):
        os.killpg(worker.pid, signal.SIGTERM)
        sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
else:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
open(sys.argv[1], "w").write(str(worker.pid))
time.sleep(300)
"""
# The pipeline's driver: SIGTERM raises SystemExit (demo_pipeline.exit_on_sigterm), the Runner runs the launcher.
DRIVER = """
import signal, sys
from pathlib import Path
from recipe.common.steps import Runner, Step
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
work = Path(sys.argv[1])
argv = [sys.executable, str(work / "launcher.py"), str(work / "worker.pid"), sys.argv[2]]
step = Step("sft", argv, marker=work / "marker.json", log=work / "sft.log")
Runner(own_session=True, stop_grace_s=float(sys.argv[3])).launch(step)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is ended; it waits for its (new) parent to reap it
    return not Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


def _wait(predicate, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.mark.parametrize("launcher", ["polite", "deaf"])
def test_a_sigterm_ends_the_worker_in_its_own_session(tmp_path: Path, launcher: str) -> None:
    (tmp_path / "launcher.py").write_text(LAUNCHER)
    (tmp_path / "driver.py").write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    driver = subprocess.Popen([sys.executable, str(tmp_path / "driver.py"), str(tmp_path), launcher, "1"], env=env)
    pid_file = tmp_path / "worker.pid"
    assert _wait(lambda: pid_file.exists() and pid_file.read_text(), 30), "the launcher never started its worker"
    worker = int(pid_file.read_text())
    try:
        assert worker in descendants(driver.pid)
        assert os.getpgid(worker) != os.getpgid(driver.pid)  # out of the launcher's group, as torchrun's workers are
        driver.send_signal(signal.SIGTERM)
        assert driver.wait(30) == 143
        # before the fix (SIGKILL to the launcher's group only) the worker kept running in both cases
        assert _wait(lambda: not _alive(worker), 10), f"the {launcher} launcher's worker survived the SIGTERM"
    finally:
        if _alive(worker):
            os.kill(worker, signal.SIGKILL)


def test_parent_pids_reads_names_with_spaces_and_parentheses(tmp_path: Path) -> None:
    # /proc/<pid>/stat is "pid (comm) state ppid ...": a command name like "a) b" must not shift the fields
    script = tmp_path / "a) b"
    script.write_text("#!/bin/sh\nsleep 30\n")
    script.chmod(0o755)
    proc = subprocess.Popen([str(script)])
    try:
        assert _wait(lambda: parent_pids().get(proc.pid) == os.getpid(), 10)
    finally:
        proc.kill()
        proc.wait()
