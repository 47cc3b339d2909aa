"""Reads a chaos run's history and the database once every fault is undone, and says what broke.

Rules (each violation is one line of `Report.violations`):
- every job is final within FINAL_BOUND_S of the last fault's end (else it is late);
- a succeeded or failed job has exactly one result per accepted row (a cancelled or expired one
  at most one): a row without one is lost; a result without its input row, or counters
  (the chunks' scored + failed) other than the job's result rows, are duplicated;
- a failed row's result names why (a non-empty error);
- an upload answered 202 stored every row it sent, with the ids as sent (else lost);
- a job deleted (204) has no job, rows or results left;
- nothing is added to a job after it is final: its counts when first seen final (the database
  monitor, and every status read that said `finished`) equal those at the end;
- an export answered 200 holds every row of its job;
- no HTTP 500, from any request, and no answer the workload could not read;
- no key reads, exports, cancels or deletes another key's job (a 2xx for one);
- every `POST /v1/score` is answered within SINGLES_TIMEOUT_S + 1 s with a result, a 503 or a
  504, unless it overlapped a fault that leaves the API unable to answer at all (its process
  killed or stopped, its host cut off) or the API's restart after one;
- each host's resident memory in the run's last third stays under 1.5 × its first third's
  peak + 200 MB (a leak grows; a bounded process does not)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Protocol

from reviewscore.core.ingest import records
from tests.chaos.nemesis import API_AWAY
from tests.stored_ids import held_rows, stored_ids
from tests.tables import render


class Database(Protocol):
    """What the checker reads the database through (tests/multihost/conftest.py `Hosts`)."""

    def sql(self, query: str, admin: bool = False, **params: Any) -> list[Any]: ...


FINAL_BOUND_S = 180.0
# After the API's process is started again it needs a while to import and bind; a cut link's
# connections resume on TCP's retransmission backoff. Requests in that time are excused too.
API_BACK_S = 25.0


@dataclass
class Report:
    seed: int
    faults: int = 0
    jobs: int = 0
    rows: int = 0
    lost: int = 0
    duplicated: int = 0
    late: int = 0
    http_500: int = 0
    violations: list[str] = field(default_factory=list)
    table: str = ""
    # The per-fault table as data (TABLE_COLUMNS), and the lines printed under it, for the JSON
    # file `make chaos` writes (tests/tables.py write_table).
    fault_rows: list[tuple[Any, ...]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def last_line(self) -> str:
        return (
            f"chaos: seed {self.seed}, {self.faults} faults, {self.jobs} jobs, {self.rows} rows, "
            f"{self.lost} lost, {self.duplicated} duplicated, {self.late} late, "
            f"{self.http_500} HTTP 500"
        )


# Rows: the input rows, and those of chunks still held as records (tests/stored_ids.py).
JOB_COUNTS = f"""
SELECT j.id, j.status,
  (SELECT count(*) FROM input_rows i WHERE i.job_id = j.id) + {held_rows("j.id")},
  (SELECT count(*) FROM results r WHERE r.job_id = j.id),
  (SELECT coalesce(sum(scored_rows), 0) FROM chunks c WHERE c.job_id = j.id),
  (SELECT coalesce(sum(failed_rows), 0) FROM chunks c WHERE c.job_id = j.id),
  (SELECT count(*) FROM input_rows i WHERE i.job_id = j.id AND NOT EXISTS
     (SELECT 1 FROM results r WHERE r.job_id = i.job_id AND r.row_num = i.row_num)),
  (SELECT count(*) FROM results r WHERE r.job_id = j.id AND NOT EXISTS
     (SELECT 1 FROM input_rows i WHERE i.job_id = r.job_id AND i.row_num = r.row_num)),
  (SELECT count(*) FROM results r WHERE r.job_id = j.id AND r.error IS NOT NULL
     AND btrim(r.error) = '')
FROM jobs j
"""


def check(
    hosts: Database,
    seed: int,
    history: list[dict[str, Any]],
    singles_timeout_s: float,
    final_after_s: float | None,
) -> Report:
    report = Report(seed)
    faults = [e for e in history if e["op"] == "fault"]
    report.faults = len(faults)
    for fault in faults:
        if fault.get("error"):
            report.violations.append(
                f"fault {fault['kind']} at {fault['t0']:.1f}s: {fault['error']}"
            )
    deleted = {e["job"] for e in history if e["op"] == "delete" and e.get("status") == 204}
    # A DELETE whose answer never came (the API killed or cut off mid-request) may or may not
    # have happened: either outcome is right, so its job may be missing (seed 101, 30 minutes).
    maybe_deleted = {e["job"] for e in history if e["op"] == "delete" and e.get("status") == 0}
    counts = {row[0]: row for row in hosts.sql(JOB_COUNTS, magic=records.MAGIC)}
    # A delete marks the job deleted (gone for every reader) before its rows go in batches; one
    # whose API process died mid-way is finished by the sweeper after DELETE_GRACE_S (600 s),
    # which may be after the run. Such a job is gone for users: not "still there", and its rows
    # are not counted as left over.
    erasing = {row[0] for row in hosts.sql("SELECT id FROM jobs WHERE deleted_at IS NOT NULL")}
    counts = {job_id: row for job_id, row in counts.items() if job_id not in erasing}
    report.jobs = len(counts) + len(deleted - set(counts))

    # --- the database, job by job -------------------------------------------------------------
    for job_id, status, rows, results, scored, failed, missing, ghosts, blank in counts.values():
        status = str(status)
        report.rows += rows
        if status not in ("succeeded", "failed", "cancelled", "expired"):
            report.late += 1
            report.violations.append(f"job {job_id} still {status} at the end")
        elif status in ("succeeded", "failed") and missing:
            report.lost += missing
            report.violations.append(f"job {job_id} ({status}): {missing} rows without a result")
        if scored + failed != results or ghosts:
            report.duplicated += abs(scored + failed - results) + ghosts
            report.violations.append(
                f"job {job_id}: counters {scored} scored + {failed} failed, {results} result "
                f"rows, {ghosts} results without an input row"
            )
        if blank:
            report.violations.append(f"job {job_id}: {blank} failed rows without a reason")
        if job_id in deleted:
            report.violations.append(f"job {job_id} was deleted (204) but is still there")
    for job_id in deleted - set(counts) - erasing:
        [(left,)] = hosts.sql(
            "SELECT (SELECT count(*) FROM input_rows WHERE job_id = :j) "
            "+ (SELECT count(*) FROM results WHERE job_id = :j)",
            j=job_id,
        )
        if left:
            report.violations.append(f"job {job_id} deleted, yet {left} of its rows are left")

    # --- uploads answered 202: every row stored, ids as sent -----------------------------------
    for entry in history:
        if entry["op"] != "upload" or entry.get("status") != 202 or entry["job"] in deleted:
            continue
        if entry["job"] in maybe_deleted and entry["job"] not in counts:
            continue
        job_id = entry["job"]
        # As its export lists them: a chunk not scored (its job cancelled first) holds its
        # rows in its records blob, not in input_rows (seed 101, the first run of stop 27).
        ids = stored_ids(hosts.sql, job_id)
        stored = len(ids)
        as_sent = len({i for i in ids if i is not None and i.startswith(entry["prefix"] + "-")})
        if job_id not in counts:
            report.lost += entry["n"]
            report.violations.append(f"job {job_id} ({entry['format']}) accepted, now missing")
        elif (stored, as_sent) != (entry["n"], entry["n"]):
            report.lost += max(0, entry["n"] - as_sent)
            report.violations.append(
                f"job {job_id} ({entry['format']}): sent {entry['n']} rows, 202, stored "
                f"{stored} ({as_sent} with the ids sent)"
            )

    # --- nothing added after final ------------------------------------------------------------
    for entry in history:
        job_id = entry.get("job")
        if job_id not in counts or job_id in deleted:
            continue
        _, status, _, results, scored, failed, *_ = counts[job_id]
        then: tuple[Any, ...]
        now: tuple[Any, ...]
        if entry["op"] == "final_seen":
            then = (entry["job_status"], entry["scored"], entry["failed"], entry["results"])
            now = (str(status), scored, failed, results)
        elif entry["op"] == "status" and entry.get("finished"):
            then = (entry["job_status"], entry["scored"], entry["failed"])
            now = (str(status), scored, failed)
        elif entry["op"] == "export" and entry.get("status") == 200:
            if entry["rows"] != counts[job_id][2]:
                report.violations.append(
                    f"export of {job_id} as {entry['format']} at {entry['t0']:.1f}s: "
                    f"{entry['rows']} rows of {counts[job_id][2]}"
                )
            continue
        else:
            continue
        if then != now:
            report.violations.append(
                f"job {job_id} changed after final: {then} at {entry['t0']:.1f}s, {now} at the end"
            )

    # --- HTTP answers --------------------------------------------------------------------------
    away = _api_away(faults)
    for entry in history:
        statuses = [entry.get("status")] + list(entry.get("statuses", []))
        if 500 in statuses:
            report.http_500 += statuses.count(500)
            report.violations.append(
                f"HTTP 500 from {entry.get('method', '')} {entry.get('path', entry['op'])} at "
                f"{entry.get('t0', 0):.1f}s ({entry.get('format', '')}, {statuses.count(500)} "
                f"times): {entry.get('detail', '')}"
            )
        if entry.get("status") == -1:  # the workload's own code raised: an answer it cannot read
            report.violations.append(
                f"{entry['op']} at {entry.get('t0', 0):.1f}s raised {entry.get('detail', '')}"
            )
        if "owner" in entry and entry["owner"] != entry["key"] and 200 <= entry["status"] < 300:
            report.violations.append(
                f"key {entry['key']} got {entry['status']} for {entry['method']} "
                f"{entry['path']}, a job of key {entry['owner']}"
            )
        if entry["op"] != "score" or _overlaps(entry, away):
            continue
        took = entry["t1"] - entry["t0"]
        if entry["status"] not in (200, 503, 504) or took > singles_timeout_s + 1:
            report.violations.append(
                f"POST /v1/score at {entry['t0']:.1f}s: {entry['status']} after {took:.1f}s "
                f"({entry.get('detail', '')})"
            )

    # --- memory -------------------------------------------------------------------------------
    samples: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for entry in history:
        if entry["op"] == "rss":
            samples[entry["host"]].append((entry["t0"], entry["kb"]))
    end = max((t for points in samples.values() for t, _ in points), default=0)
    memory = []
    for host, points in sorted(samples.items()):
        first = max((kb for t, kb in points if t < end / 3), default=0)
        last = max((kb for t, kb in points if t > 2 * end / 3), default=0)
        memory.append(f"{host} {first / 1024:.0f}->{last / 1024:.0f} MB")
        if first and last > 1.5 * first + 200 * 1024:
            report.violations.append(
                f"memory of host {host}: peak {first / 1024:.0f} MB in the first third, "
                f"{last / 1024:.0f} MB in the last"
            )

    if final_after_s is None:
        report.violations.append(f"jobs not all final {FINAL_BOUND_S:.0f}s after the last fault")
    report.fault_rows = _rows(faults, history)
    if final_after_s is not None:
        report.notes.append(
            f"every job final {final_after_s:.1f}s after the last fault (bound "
            f"{FINAL_BOUND_S:.0f}s)"
        )
    report.notes.append("peak memory per host (first third -> last third): " + ", ".join(memory))
    report.table = "\n".join([render(TABLE_TITLE, TABLE_COLUMNS, report.fault_rows), *report.notes])
    return report


def _api_away(faults: list[dict[str, Any]]) -> list[tuple[float, float]]:
    return [(f["t0"], f["t1"] + API_BACK_S) for f in faults if f["kind"] in API_AWAY]


def _overlaps(entry: dict[str, Any], windows: list[tuple[float, float]]) -> bool:
    return any(entry["t0"] < end and entry["t1"] > start for start, end in windows)


TABLE_TITLE = (
    "chaos: per fault kind (requests = those sent or answered while a fault of the kind lasted)"
)
TABLE_COLUMNS = (
    "fault", "n", "seconds", "requests", "2xx", "503/504", "no answer", "500", "score s"
)  # fmt: skip


def _rows(faults: list[dict[str, Any]], history: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Per fault kind: how often, how long, and what the requests sent meanwhile got."""
    requests = [e for e in history if "method" in e or e["op"] == "upload"]
    rows = []
    for kind in sorted({f["kind"] for f in faults}):
        of_kind = [f for f in faults if f["kind"] == kind]
        windows = [(f["t0"], f["t1"]) for f in of_kind]
        during = [e for e in requests if "t1" in e and _overlaps(e, windows)]
        scores = [e["t1"] - e["t0"] for e in during if e["op"] == "score" and e["status"] == 200]
        rows.append(
            (
                kind,
                len(of_kind),
                sum(f["t1"] - f["t0"] for f in of_kind),
                len(during),
                sum(1 for e in during if 200 <= e["status"] < 300),
                sum(1 for e in during if e["status"] in (503, 504)),
                sum(1 for e in during if e["status"] in (0, -1)),
                sum(1 for e in during if e["status"] == 500),
                max(scores, default=0.0),
            )
        )
    return rows
