"""CPU time of processes, for the rows that say which side was the limit."""

from __future__ import annotations

from collections.abc import Iterable

import psutil


def cpu_seconds(processes: Iterable[psutil.Process]) -> float:
    """User plus system CPU seconds of these processes so far (those gone since count 0)."""
    total = 0.0
    for process in processes:
        try:
            t = process.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            continue
    return total


def tree_cpu_seconds(pid: int, *, with_exited_children: bool = False) -> float:
    """CPU seconds of a process and its live descendants; with `with_exited_children`, also of
    the children it has already reaped (PostgreSQL's backends that have exited)."""
    main = psutil.Process(pid)
    total = cpu_seconds([main, *main.children(recursive=True)])
    if with_exited_children:
        times = main.cpu_times()
        total += times.children_user + times.children_system
    return total
