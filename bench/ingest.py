"""Ingest of one dump on PostgreSQL, side by side in one run: today's single-stream upload, the
same rows as 4 parallel parts to one API process, and as 4 parts spread over two API processes.
Nothing consumes `bulk` meanwhile, so what is timed is the API parsing and storing (COPY) and
the database taking the rows. For each: rows/s, and the CPU the API processes and the
PostgreSQL server spend per row; from the CPU per row, how many worker cores one dump feeds
at MODEL_REVIEWS_PER_CORE_S (the default model's speed on a core). Part of
`make bench-coordination` (bench/coordination.py calls `measure`)."""

from __future__ import annotations

import csv
import io
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psutil

from bench.cpu import tree_cpu_seconds

PARTS = 4
SINGLE = "single stream"


def split_csv(body: bytes, parts: int) -> list[bytes]:
    """Whole-record CSV parts, each with the header (the benchmark's reviews hold no quoted line
    breaks after csv.writer, so the records are lines)."""
    header, _, rest = body.partition(b"\n")
    lines = rest.splitlines(keepends=True)
    size = -(-len(lines) // parts)
    return [header + b"\n" + b"".join(lines[i : i + size]) for i in range(0, len(lines), size)]


def _cpu(pids: list[int], postmaster: int) -> tuple[float, float]:
    from bench.coordination import postgres_cpu_s

    return sum(tree_cpu_seconds(p) for p in pids), postgres_cpu_s(postmaster)


def _single(url: str, body: bytes) -> str:
    answer = httpx.post(
        url + "/v1/jobs",
        params={"id_column": "id"},
        content=body,
        headers={"Content-Type": "text/csv"},
        timeout=1800,
    )
    answer.raise_for_status()
    return str(answer.json()["id"])


def _in_parts(urls: list[str], body: bytes) -> str:
    job = httpx.post(urls[0] + "/v1/jobs", params={"parts": "true", "id_column": "id"}, timeout=60)
    job.raise_for_status()
    job_id = str(job.json()["id"])
    pieces = split_csv(body, PARTS)

    def send(number: int) -> None:
        target = urls[number % len(urls)]
        answer = httpx.put(
            f"{target}/v1/jobs/{job_id}/parts/{number}", content=pieces[number - 1], timeout=1800
        )
        answer.raise_for_status()

    with ThreadPoolExecutor(PARTS) as pool:
        list(pool.map(send, range(1, len(pieces) + 1)))
    done = httpx.post(f"{urls[0]}/v1/jobs/{job_id}/complete", json={"parts": len(pieces)})
    done.raise_for_status()
    return job_id


def _one(
    name: str, send: Any, urls: list[str], pids: list[int], postmaster: int, body: bytes, rows: int
) -> dict[str, Any]:
    api_before, pg_before = _cpu(pids, postmaster)
    started = time.perf_counter()
    job_id = send(urls, body) if send is not None else _single(urls[0], body)
    wall = time.perf_counter() - started
    api_after, pg_after = _cpu(pids, postmaster)
    received = httpx.get(f"{urls[0]}/v1/jobs/{job_id}", timeout=30).json()["received"]
    assert received == rows, (name, received, rows)
    return {
        "how": name,
        "rows": rows,
        "wall_s": wall,
        "rows_per_s": rows / wall,
        "api_cpu_us_per_row": 1e6 * (api_after - api_before) / rows,
        "postgres_cpu_us_per_row": 1e6 * (pg_after - pg_before) / rows,
        "job_id": job_id,
    }


def measure(
    parsing: tuple[str, int],
    url: str,
    api_pid: int,
    second: tuple[str, int] | None,
    postmaster: int,
    body: bytes,
    rows: int,
) -> list[dict[str, Any]]:
    """Each way in one run, on the same rows (new ids each time, same texts): first today's
    single stream through an API process that parses (`parsing`: REVIEWSCORE_INGEST_PARSE=api),
    the baseline; then through API processes that store records for the workers to parse
    (the default), as one stream, 4 parts to one API, 4 parts over two."""
    p_url, p_pid = parsing
    runs = [
        _one(SINGLE + ", API parses", None, [p_url], [p_pid], postmaster, body, rows),
        _one(f"{PARTS} parts, API parses", _in_parts, [p_url], [p_pid], postmaster, body, rows),
        _one(SINGLE, None, [url], [api_pid], postmaster, body, rows),
        _one(f"{PARTS} parts, 1 API", _in_parts, [url], [api_pid], postmaster, body, rows),
    ]
    if second is not None:
        urls, pids = [url, second[0]], [api_pid, second[1]]
        runs.append(_one(f"{PARTS} parts, 2 APIs", _in_parts, urls, pids, postmaster, body, rows))
    runs[0]["worker_parse_us_per_row"] = 0.0
    for run in runs[1:]:
        run["worker_parse_us_per_row"] = 0.0 if "API parses" in run["how"] else parse_cost(body)
    return runs


def parse_cost(body: bytes, chunk_rows: int = 1000) -> float:
    """CPU us a row a worker spends parsing the stored records (core/ingest/records.py), on one
    core of this machine: what design (b) moves from the API to the workers (their storing of
    the input rows at completion comes on top, in the drain's figures)."""
    from reviewscore.core.ingest import IngestLimits, UploadOptions, open_reviews, records

    limits = IngestLimits(1 << 40, 100_000, 1 << 40, 200)
    reviews = open_reviews(io.BytesIO(body), limits, UploadOptions(id_column="id"))
    spec = reviews.record_spec()
    assert spec is not None
    stored = list(reviews.records())
    blobs = [
        (stored[i][0], records.pack(spec, [raw for _, raw in stored[i : i + chunk_rows]]))
        for i in range(0, len(stored), chunk_rows)
    ]
    started = time.process_time()
    for first_row, blob in blobs:
        records.parse(blob, first_row)
    return 1e6 * (time.process_time() - started) / len(stored)


def feeds(run: dict[str, Any], reviews_per_core_s: float) -> tuple[float, float]:
    """Worker cores the dump keeps busy: at the rate measured here (bound by this 2-core
    machine), and per core given to ingest (a worker core spends 1e6 / reviews_per_core_s us
    a row scoring, plus the parse where it parses; the API and PostgreSQL spend their CPU per
    row), which is what scales with hosts."""
    worker = 1e6 / reviews_per_core_s + run.get("worker_parse_us_per_row", 0.0)
    return run["rows_per_s"] / reviews_per_core_s, worker / cpu(run)


def cpu(run: dict[str, Any]) -> float:
    return float(run["api_cpu_us_per_row"] + run["postgres_cpu_us_per_row"])


def all_cpu(run: dict[str, Any]) -> float:
    """Every ingest CPU a row, wherever it runs: the API, PostgreSQL and the workers' parse."""
    return cpu(run) + float(run.get("worker_parse_us_per_row", 0.0))


def table(runs: list[dict[str, Any]], reviews_per_core_s: float) -> list[str]:
    base = runs[0]
    lines = [
        f"ingest of one dump on PostgreSQL ({base['rows']:,} rows, nothing scoring meanwhile):",
        f"  {'how':<26} {'rows/s':>9} {'x single':>9} {'API CPU us/row':>15} "
        f"{'pg CPU us/row':>14} {'x CPU':>6} {'feeds':>6} {'per core':>9} {'worker parse':>13}"
        f" {'x all':>6}",
    ]
    for r in runs:
        at_rate, per_core = feeds(r, reviews_per_core_s)
        lines.append(
            f"  {r['how']:<26} {r['rows_per_s']:>9,.0f} {r['rows_per_s'] / base['rows_per_s']:>9.2f}"
            f" {r['api_cpu_us_per_row']:>15.1f} {r['postgres_cpu_us_per_row']:>14.1f}"
            f" {cpu(r) / cpu(base):>6.2f} {at_rate:>6.1f} {per_core:>9.2f}"
            f" {r.get('worker_parse_us_per_row', 0.0):>10.1f} us"
            f" {all_cpu(r) / all_cpu(base):>6.2f}"
        )
    lines.append(
        f"  (feeds: worker cores at {reviews_per_core_s:,.0f} reviews/s each that the measured "
        "rate keeps busy; per core: worker cores (scoring, and parsing where they parse) fed per "
        "core of API + PostgreSQL CPU; x CPU: API + PostgreSQL CPU a row against the first "
        "row's; worker parse: CPU a row the workers spend parsing the stored records instead; "
        "x all: API + PostgreSQL + worker parse CPU a row against the first row's; "
        f"{psutil.cpu_count()} cores on this machine, shared by every process above)"
    )
    return lines


def csv_rows(body: bytes) -> int:
    return sum(1 for _ in csv.reader(io.StringIO(body.decode()))) - 1
