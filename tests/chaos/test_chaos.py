"""The chaos soak: CHAOS_MINUTES (3 by default, the short form `make test` runs) of workload
under faults drawn from CHAOS_SEED (random when unset, printed either way), then the checker
(tests/chaos/checker.py). The history stays in var/chaos/<seed>-<time>/ (its path printed): the
same seed replays the same schedule of faults. Needs root and network namespaces, as the
multi-host suite does (skipped loudly elsewhere)."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import secrets
import signal
import time
from pathlib import Path

import httpx
import pytest

from reviewscore.core.settings import REPO_ROOT
from tests.chaos import nemesis
from tests.chaos.checker import FINAL_BOUND_S, TABLE_COLUMNS, TABLE_TITLE, check
from tests.chaos.workload import FINAL, History, Workload, read_history
from tests.multihost.conftest import Hosts
from tests.multihost.harness import iter_logs, wait_until
from tests.tables import write_table

SINGLES_TIMEOUT_S = 5.0
KEYS = 3
MINUTES = float(os.environ.get("CHAOS_MINUTES") or 3)


def chaos_env(files: Path) -> dict[str, str]:
    return {
        "REVIEWSCORE_SINGLES_TIMEOUT_S": str(SINGLES_TIMEOUT_S),
        # An upload cut by a fault (its API killed) ends failed soon, not after 5 minutes ...
        "REVIEWSCORE_UPLOAD_STALL_S": "20",
        # ... and so does a job in parts whose client gave up before completing it.
        "REVIEWSCORE_PARTS_UPLOAD_TTL_S": "30",
        "REVIEWSCORE_URL_FILE_DIRS": str(files),
        # API keys required: the workload sends with several.
        "REVIEWSCORE_ENV": "production",
        "REVIEWSCORE_FLOWER_PASSWORD": secrets.token_hex(8),
    }


def restore_everything(hosts: Hosts) -> None:
    """Whatever a fault left behind (an undo that failed): links up, processes continued and
    running."""
    nemesis.ballast(hosts).unlink(missing_ok=True)
    for host in hosts.cluster.hosts.values():
        if host.is_cut():
            host.restore()
        for proc in host.procs.values():
            try:
                os.killpg(proc.process.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    if not _alive(hosts, "data", "postgres"):
        hosts.pg.start()
    if not _alive(hosts, "data", "redis"):
        hosts.redis.start()
    if not (_alive(hosts, "api", "api") and _alive(hosts, "api", "beat")):
        hosts.service.start_api(hosts.api)
    for name in nemesis.WORKERS:
        if not _alive(hosts, name, "worker"):
            nemesis.start_worker(hosts, name)
    offset = hosts.worker(nemesis.CLOCK_HOST).folder / "faketime-offset"
    if offset.exists():
        offset.write_text("+0s\n")


def _alive(hosts: Hosts, host: str, proc: str) -> bool:
    found = hosts.cluster.hosts[host].procs.get(proc)
    return found is not None and found.alive()


# The hosts' setup, the run, then the drain (at most FINAL_BOUND_S) and the check: `make test`
# runs the 3-minute form (CHAOS_SEED fixed there, so a red run is a regression, not a new draw;
# three multi-host cases whose faults the nemesis applies are left to `make multihost` to make
# room), `make chaos` any seed and length.
@pytest.mark.timeout(int(MINUTES * 60 + 900))
def test_chaos_soak(hosts: Hosts, capsys: pytest.CaptureFixture[str]) -> None:
    seed = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(1, 100_000))
    minutes = MINUTES
    folder = REPO_ROOT / "var" / "chaos" / f"{seed}-{time.strftime('%Y%m%dT%H%M%S')}"
    files = folder / "files"
    files.mkdir(parents=True)
    with capsys.disabled():  # printed in `make test` too, where output is captured
        print(f"\nchaos: seed {seed}, {minutes:g} minutes, history in {folder}", flush=True)
    clock = nemesis.FAKETIME_LIB.exists()
    planned = nemesis.schedule(seed, minutes * 60, clock)
    (folder / "schedule.json").write_text(
        json.dumps([dataclasses.asdict(p) for p in planned], indent=1)
    )

    hosts.heal()
    if not hosts.pg.data.is_mount():
        hosts.pg.move_to_small_disk(nemesis.DISK_MB)
        wait_until("PostgreSQL on its own disk", hosts.pg.answers, 60)
    # The key is the last line the command prints.
    keys = [
        hosts.service.cli("keys", "create", f"chaos-{i}").stdout.strip().splitlines()[-1]
        for i in range(KEYS)
    ]
    hosts.service = dataclasses.replace(
        hosts.service, extra_env={**hosts.service.extra_env, **chaos_env(files)}
    )
    hosts.service.start_api(hosts.api)
    for name in nemesis.WORKERS:
        nemesis.start_worker(hosts, name)
    wait_until("the API", lambda: httpx.get(hosts.url + "/healthz", timeout=2).is_success, 60)
    for name in nemesis.WORKERS:
        hosts.wait_worker(hosts.worker(name))

    started = time.monotonic()
    history = History(folder / "history.jsonl", started)
    workload = Workload(hosts, history, seed, files, SINGLES_TIMEOUT_S, keys)
    workload.start()
    try:
        nemesis.run(hosts, planned, started, history.record, workload.stop.is_set)
        last_fault = time.monotonic()
        while time.monotonic() - started < minutes * 60:
            time.sleep(0.5)
    finally:
        workload.finish()
        restore_everything(hosts)
    final_after_s: float | None = None
    try:
        wait_until(
            "every job final",
            lambda: (
                not hosts.sql(
                    "SELECT 1 FROM jobs WHERE NOT (status = ANY(:f)) LIMIT 1", f=list(FINAL)
                )
            ),
            FINAL_BOUND_S - (time.monotonic() - last_fault),
            interval=1.0,
        )
        final_after_s = time.monotonic() - last_fault
    except AssertionError:
        pass
    history.record({"op": "end", "t0": history.now(), "final_after_s": final_after_s})
    history.close()

    report = check(
        hosts, seed, read_history(folder / "history.jsonl"), SINGLES_TIMEOUT_S, final_after_s
    )
    print(report.table)
    for violation in report.violations:
        print(f"VIOLATION: {violation}")
    print(
        f"history: {folder / 'history.jsonl'} (replay: make chaos SEED={seed} MINUTES={minutes:g})"
    )
    with capsys.disabled():
        print(report.last_line(), flush=True)
    found = tracebacks(hosts)
    if found:
        (folder / "tracebacks.txt").write_text(found)
        print(f"tracebacks in the processes' logs: {folder / 'tracebacks.txt'}")
    (folder / "report.txt").write_text(
        report.table
        + "\n"
        + "".join(f"VIOLATION: {v}\n" for v in report.violations)
        + report.last_line()
        + "\n"
    )
    write_table(
        f"chaos-{seed}",
        TABLE_TITLE,
        TABLE_COLUMNS,
        report.fault_rows,
        f"make chaos SEED={seed} MINUTES={minutes:g}",
        [*report.notes, *(f"VIOLATION: {v}" for v in report.violations), report.last_line()],
    )
    assert not report.violations, f"{len(report.violations)} violations (see above); seed {seed}"


def tracebacks(hosts: Hosts, lines: int = 40) -> str:
    """Every traceback the processes logged (an HTTP 500 leaves one in the API's log), with the
    process it came from: kept beside the history, so a failure can be read as well as replayed
    (the host folders go with the run)."""
    found = []
    for name, proc in iter_logs(hosts.cluster.hosts):
        log = proc.log().splitlines()
        for i, line in enumerate(log):
            if line.startswith("Traceback (most recent call last):"):
                found.append(f"== {name}, line {i + 1}\n" + "\n".join(log[i : i + lines]))
    return "\n".join(found)
