"""Ending a command's whole process tree on an interruption, including children that left its session.

torchrun starts every worker with `start_new_session=True` and ends them itself when it gets SIGTERM; a SIGKILL to
torchrun's process group gives it no chance and leaves the workers running (seen twice: a SIGTERM to the gap bench
left verl's SFT trainer training). So `end_tree` first notes every descendant (from /proc), asks the tree to stop
(SIGTERM to the command's group, or to the command alone when it shares ours), waits up to `grace_s` for the command,
then SIGKILLs the command's group and the group of every noted descendant that is still alive: what a cooperative
launcher did not end, this does.

Linux only (/proc); elsewhere the descendants are not found and only the command's group is ended, as before.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

PROC = Path("/proc")


def parent_pids() -> dict[int, int]:
    """{pid: parent pid} of every process visible in /proc (processes that end while being read are left out)."""
    out = {}
    for entry in PROC.iterdir() if PROC.is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'
        fields = stat[stat.rfind(")") + 2 :].split()
        out[int(entry.name)] = int(fields[1])
    return out


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, their children, ...), breadth first; [] when /proc is unreadable."""
    children: dict[int, list[int]] = {}
    for child, parent in parent_pids().items():
        children.setdefault(parent, []).append(child)
    found, queue = [], list(children.get(pid, []))
    while queue:
        p = queue.pop(0)
        found.append(p)
        queue.extend(children.get(p, []))
    return found


def end_tree(proc: subprocess.Popen, own_session: bool, grace_s: float = 10.0) -> None:
    """End `proc` and everything it started, then reap it.

    Args:
        proc: the running command.
        own_session: it was started with `start_new_session=True` (its process group is its pid).
        grace_s: seconds the command gets to end its own children after SIGTERM before everything noted is SIGKILLed.

    Note:
        A pid noted here can in principle be reused by an unrelated process before the SIGKILL (the window is the
        grace period); our own process group is never signalled.
    """
    tree = descendants(proc.pid)
    ours = os.getpgrp()
    try:
        if own_session:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.terminate()
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    groups, loners = ({proc.pid} if own_session else set()), [proc.pid] if not own_session else []
    for pid in tree:
        try:
            group = os.getpgid(pid)
        except ProcessLookupError:
            continue  # already ended
        if group == ours:
            loners.append(pid)
        else:
            groups.add(group)
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for pid in loners:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    proc.wait()
