"""Process plumbing shared by the runner and the workers: a child that dies with its parent."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: signal.Signals = signal.SIGTERM, parent_pid: int | None = None) -> None:
    """Asks Linux to send `sig` to this process when its parent goes, even by SIGKILL, so no
    child outlives what started it (PR_SET_PDEATHSIG; kept across exec). The signal comes when
    the parent's *thread* that forked us exits, so fork from a thread that lives as long as the
    parent (the main thread). `parent_pid`: exit at once if the parent is already gone (it may
    die between fork and this call). A no-op off Linux."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return
    if parent_pid is not None and os.getppid() != parent_pid:
        os.kill(os.getpid(), sig)
