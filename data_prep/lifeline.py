"""Pool workers die with the main process, however it dies (SIGKILL by the OOM killer included).

A `ProcessPoolExecutor` worker started by the forkserver blocks on its task queue forever when the main process is
killed (every worker holds both ends of that queue, so it never sees EOF), and the forkserver and the resource tracker
stay with it. So each worker:
- watches the main process through a pidfd (Linux >= 5.3; else it polls the pid once a second) in a daemon thread;
  when the main process is gone it kills its own parent, the forkserver (nobody else uses it), and exits;
- asks the kernel for SIGKILL when its parent (the forkserver) dies (`prctl(PR_SET_PDEATHSIG)`, Linux).
The resource tracker then sees every holder of its pipe gone and exits too.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Have the kernel send `sig` to this process when its parent dies (Linux only; False elsewhere)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _wait_then_exit(main_pid: int, pidfd: int | None) -> None:
    if pidfd is not None:
        select.select([pidfd], [], [])  # readable once the process has exited
    else:
        while _alive(main_pid):
            time.sleep(1.0)
    parent = os.getppid()
    if parent not in (1, main_pid):  # the forkserver that forked this worker: orphaned with the main process
        try:
            os.kill(parent, signal.SIGKILL)
        except OSError:
            pass
    os._exit(1)


def follow_main_process(main_pid: int) -> None:
    """Exit this worker (and its forkserver) as soon as process `main_pid` is gone; call once per worker."""
    set_parent_death_signal()
    try:
        pidfd: int | None = os.pidfd_open(main_pid)
    except (AttributeError, OSError):  # no pidfd (old kernel, not Linux), or the main process is gone already
        pidfd = None
    if pidfd is None and not _alive(main_pid):
        os._exit(1)
    threading.Thread(target=_wait_then_exit, args=(main_pid, pidfd), name="follow-main", daemon=True).start()
