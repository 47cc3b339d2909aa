"""The faults: a schedule drawn from the seed alone (so a run is replayed from its seed), and how
each kind is applied to the hosts and undone.

One fault at a time: it starts, lasts its drawn duration, is undone (a killed process started
again, a stopped one continued, a link set up, a server started), then a drawn gap follows.
Kinds (all in): SIGKILL / SIGSTOP of a worker host, SIGKILL / SIGSTOP of the API process,
SIGKILL of beat, a worker host's link cut, the API host's link cut, PostgreSQL restarted (a fast
shutdown, down for the duration), Redis restarted, and a worker's wall clock jumped forward
(libfaketime reading its offset from a file; only where libfaketime is installed), and the data
host's disk full (PostgreSQL's data directory on a small filesystem of its own, filled with a
ballast file, then freed)."""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tests.conftest import fill_filesystem
from tests.multihost.conftest import Hosts
from tests.multihost.harness import Host

WORKERS = ("w1", "w2")
FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
CLOCK_HOST = "w2"  # the worker that runs under libfaketime, its offset in a file
CLOCK_JUMP_S = 120
# Faults that leave the API unable to answer at all: requests sent during one are excused from
# the answered-in-time rule (no server can answer through a cut link or while stopped).
API_AWAY = {"kill_api", "stop_api", "cut_api"}

KINDS = (
    "kill_worker",
    "stop_worker",
    "cut_worker",
    "kill_api",
    "stop_api",
    "cut_api",
    "kill_beat",
    "restart_postgres",
    "restart_redis",
    "clock_jump",
    "disk_full",
)
DISK_MB = 512  # PostgreSQL's own filesystem in a chaos run (harness.Postgres.move_to_small_disk)


@dataclass
class Planned:
    at_s: float  # from the start of the workload
    kind: str
    target: str
    duration_s: float


def schedule(seed: int, seconds: float, clock: bool) -> list[Planned]:
    """The faults of a run: drawn from the seed alone, sequential, ending 10 s before the end."""
    rng = random.Random(seed)
    kinds = [k for k in KINDS if clock or k != "clock_jump"]
    planned: list[Planned] = []
    at = rng.uniform(5, 10)
    while True:
        kind = rng.choice(kinds)
        duration = round(rng.uniform(3, 12), 1)
        if kind in ("kill_worker", "stop_worker", "cut_worker"):
            target = rng.choice(WORKERS)
        elif kind == "clock_jump":
            target = CLOCK_HOST
        elif kind in ("restart_postgres", "restart_redis", "disk_full"):
            target = "data"
        else:
            target = "api"
        if at + duration > seconds - 10:
            return planned
        planned.append(Planned(round(at, 1), kind, target, duration))
        at += duration + rng.uniform(3, 10)


def clock_env(host: Host) -> dict[str, str]:
    """libfaketime with its offset read from a file (re-read every second), so the nemesis can
    jump the wall clock of a running worker; the monotonic clock stays true."""
    offset = host.folder / "faketime-offset"
    if not offset.exists():
        offset.write_text("+0s\n")
    return {
        "LD_PRELOAD": str(FAKETIME_LIB),
        "FAKETIME_TIMESTAMP_FILE": str(offset),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "PYTHONPATH": str(Path(__file__).parents[1] / "multihost" / "faketime_sleep"),
    }


def start_worker(hosts: Hosts, name: str) -> None:
    host = hosts.worker(name)
    if name == CLOCK_HOST and FAKETIME_LIB.exists():
        hosts.start_worker(name, variant="clock", env=clock_env(host))
    else:
        hosts.start_worker(name)


def _signal_all(host: Host, sig: int, names: tuple[str, ...] | None = None) -> None:
    for name, proc in list(host.procs.items()):
        if names is None or name in names:
            try:
                os.killpg(proc.process.pid, sig)
            except ProcessLookupError:
                pass


def _start_api_process(hosts: Hosts) -> None:
    stack = hosts.service.stack(hosts.api)
    hosts.api.start("api", stack.api_args(), stack.env())


def _start_beat(hosts: Hosts) -> None:
    stack = hosts.service.stack(hosts.api)
    hosts.api.start("beat", stack.beat_args(), stack.env())


def _write(path: Path, content: str) -> None:
    path.write_text(content)


def apply(hosts: Hosts, fault: Planned) -> Callable[[], None]:
    """Applies one fault; returns what undoes it."""
    kind = fault.kind
    if kind == "kill_worker":
        hosts.worker(fault.target).kill()
        return lambda: start_worker(hosts, fault.target)
    if kind == "stop_worker":
        host = hosts.worker(fault.target)
        _signal_all(host, signal.SIGSTOP)
        return lambda: _signal_all(host, signal.SIGCONT)
    if kind == "cut_worker":
        host = hosts.worker(fault.target)
        host.cut()
        return host.restore
    if kind == "kill_api":
        hosts.api.stop("api", sig=signal.SIGKILL)
        return lambda: _start_api_process(hosts)
    if kind == "stop_api":
        _signal_all(hosts.api, signal.SIGSTOP, ("api",))
        return lambda: _signal_all(hosts.api, signal.SIGCONT, ("api",))
    if kind == "cut_api":
        hosts.api.cut()
        return hosts.api.restore
    if kind == "kill_beat":
        hosts.api.stop("beat", sig=signal.SIGKILL)
        return lambda: _start_beat(hosts)
    if kind == "restart_postgres":
        hosts.pg.stop()
        return hosts.pg.start
    if kind == "restart_redis":
        hosts.redis.stop()
        return hosts.redis.start
    if kind == "clock_jump":
        offset = hosts.worker(fault.target).folder / "faketime-offset"
        offset.write_text(f"+{CLOCK_JUMP_S}s\n")
        return lambda: _write(offset, "+0s\n")
    if kind == "disk_full":
        fill_disk(hosts)
        return lambda: free_disk(hosts)
    raise ValueError(f"unknown fault kind {kind!r}")


def ballast(hosts: Hosts) -> Path:
    return hosts.pg.data / "chaos-ballast"


def fill_disk(hosts: Hosts) -> None:
    """Takes every free byte of PostgreSQL's filesystem."""
    fill_filesystem(ballast(hosts))


def free_disk(hosts: Hosts) -> None:
    """Frees the disk; a server that stopped for want of space is started again, as its
    operator would."""
    ballast(hosts).unlink(missing_ok=True)
    proc = hosts.data.procs.get("postgres")
    if proc is None or not proc.alive():
        hosts.pg.start()


def run(
    hosts: Hosts,
    planned: list[Planned],
    started: float,
    record: Callable[[dict[str, Any]], None],
    stop: Callable[[], bool],
) -> None:
    """Applies the schedule against the clock of the workload (`started`, monotonic)."""
    for fault in planned:
        while time.monotonic() - started < fault.at_s:
            if stop():
                return
            time.sleep(0.1)
        began = time.monotonic()
        error = None
        try:
            undo = apply(hosts, fault)
        except Exception as exc:  # noqa: BLE001 - recorded: the checker reports it
            error, undo = repr(exc), (lambda: None)
        applied = time.monotonic()
        time.sleep(max(0.0, fault.duration_s - (applied - began)))
        try:
            undo()
        except Exception as exc:  # noqa: BLE001 - recorded: the checker reports it
            error = (error or "") + f" undo: {exc!r}"
        record(
            {
                "op": "fault",
                **asdict(fault),
                "t0": began - started,
                "t1": time.monotonic() - started,
                "error": error,
            }
        )
