"""The fault suite: each case starts its own stack, uploads real reviews and breaks something
mid-job; every accepted row must end with exactly one result and the job must finish on its own.

`make faults` runs it with -s and prints a table: per case the rows accepted, scored, failed,
lost and duplicated (lost and duplicated must be 0)."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from sqlalchemy import delete, func, select

from reviewscore.core.schema import Chunk, InputRow, Result, ScoreCache
from reviewscore.testing.faults import worker_env
from tests.conftest import (
    RunningStack,
    sample_reviews,
    start_stack,
    stored_texts,
    wait_for,
    write_csv,
)
from tests.tables import table_fixture

ROWS = 4000
# Short lease and grace so the sweeper recovers lost work within the test's patience; a chunk of
# 100 reviews scores in well under a second, far below the lease.
FAULT_ENV = {"REVIEWSCORE_CHUNK_LEASE_S": "15", "REVIEWSCORE_QUEUED_GRACE_S": "5"}
POISON = "\u2620POISON\u2620"
# Each chunk scored this much slower in the cases whose fault must land mid-job: a fast worker
# could otherwise finish the 4,000 rows while they are still being uploaded (seen in CI: "the
# job ended before the fault").
SLOW_S = 0.25
CRASH = "\u2620CRASH\u2620"


@dataclass(frozen=True)
class Tally:
    case: str
    accepted: int
    scored: int
    failed: int
    lost: int
    duplicated: int
    seconds: float


TABLE: list[Tally] = []


fault_table = table_fixture(
    "fault suite: every accepted row must have exactly one result",
    ("case", "accepted", "scored", "failed", "lost", "duplicated", "seconds"),
    lambda: [
        (t.case, t.accepted, t.scored, t.failed, t.lost, t.duplicated, t.seconds) for t in TABLE
    ],
    name="faults",
    command="make faults",
)


@pytest.fixture
def launch(
    request: pytest.FixtureRequest, tmp_path: Path, models_dir: Path
) -> Iterator[Callable[..., RunningStack]]:
    """Starts a stack of its own for the test (SQLite unless the test is parametrized with a
    `backend`), stopped at teardown whatever happens."""
    started: list[RunningStack] = []
    callspec = getattr(request.node, "callspec", None)
    backend = callspec.params.get("backend", "sqlite") if callspec else "sqlite"

    def start(**env: str) -> RunningStack:
        var_dir = tmp_path / "var"
        url = f"sqlite:///{var_dir / 'reviewscore.db'}"
        if backend == "postgres":
            url = request.getfixturevalue("postgres_url")
        running = start_stack(var_dir, url, models_dir, {**FAULT_ENV, **env})
        if backend == "postgres":
            # The server is shared by the session: forget earlier scores, so this job is
            # scored by the model, not served from the dedup cache.
            engine = running.engine()
            with engine.begin() as conn:
                conn.execute(delete(ScoreCache))
            engine.dispose()
        started.append(running)
        return running

    yield start
    for running in started:
        running.stack.stop()


@pytest.fixture(scope="module")
def reviews() -> list[dict[str, str]]:
    return sample_reviews(ROWS, seed=11)


def upload(stack: RunningStack, rows: list[dict[str, str]], tmp_path: Path) -> str:
    path = write_csv(tmp_path / "reviews.csv", rows, ["id", "text"])
    job = stack.client.upload(path, id_column="id")
    assert job["received"] == len(rows)
    return str(job["id"])


def progress(stack: RunningStack, job_id: str) -> int:
    return int(stack.client.job(job_id)["done"])


def wait_progress(stack: RunningStack, job_id: str, at_least: int, timeout: float = 120) -> None:
    wait_for(lambda: progress(stack, job_id) >= at_least, timeout, f"{at_least} rows done")


def count_rows(stack: RunningStack, job_id: str) -> dict[str, int]:
    engine = stack.engine()
    try:
        with engine.connect() as conn:

            def one(query: Any) -> int:
                return int(conn.execute(query).scalar_one())

            in_job = Result.job_id == job_id
            return {
                "accepted": one(
                    select(func.count()).select_from(InputRow).where(InputRow.job_id == job_id)
                ),
                "results": one(select(func.count()).select_from(Result).where(in_job)),
                "failed": one(
                    select(func.count())
                    .select_from(Result)
                    .where(in_job, Result.error.is_not(None))
                ),
                "max_attempts": one(
                    select(func.coalesce(func.max(Chunk.attempts), 0)).where(Chunk.job_id == job_id)
                ),
            }
    finally:
        engine.dispose()


def finish_and_tally(
    case: str, stack: RunningStack, job_id: str, started: float
) -> tuple[dict[str, Any], Tally]:
    """Waits (deadline, no intervention) for the job to end, then checks every row in SQL.

    Lost = accepted rows without a result row. Duplicated = rows the job counts beyond its
    result rows (a chunk counted twice): the results table's key makes a second result row for
    a row impossible, so what can go wrong is the count, and that is what is compared."""
    job = stack.wait_job(job_id, timeout=180)
    n = count_rows(stack, job_id)
    tally = Tally(
        case=case,
        accepted=n["accepted"],
        scored=n["results"] - n["failed"],
        failed=n["failed"],
        lost=n["accepted"] - n["results"],
        duplicated=job["scored"] + job["failed"] - n["results"],
        seconds=time.monotonic() - started,
    )
    TABLE.append(tally)
    assert (tally.lost, tally.duplicated) == (0, 0), tally
    assert (job["scored"], job["failed"]) == (tally.scored, tally.failed)
    assert job["total"] == job["received"] == tally.accepted
    return job, tally


def assert_rows_intact(stack: RunningStack, job_id: str, rows: list[dict[str, str]]) -> None:
    """The rows kept from a broken-off upload are the file's first rows, none torn."""
    engine = stack.engine()
    try:
        stored = stored_texts(engine, job_id)
    finally:
        engine.dispose()
    assert [tuple(r) for r in stored] == [(r["id"], r["text"]) for r in rows[: len(stored)]]


def pool_processes(stack: RunningStack) -> list[psutil.Process]:
    main = psutil.Process(stack.stack.children["worker"].process.pid)
    return [p for p in main.children() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


# --- the cases -------------------------------------------------------------------------------


# Also on PostgreSQL, where claims and completions lock rows (FOR UPDATE) instead of the file.
# `make faults` runs both; `make test` leaves the PostgreSQL form to the chaos soak, which kills
# worker hosts and restarts Redis against PostgreSQL (room in CI's half hour).
BOTH_BACKENDS = pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.long)]
)


@BOTH_BACKENDS
def test_worker_pool_process_killed_three_times(
    launch: Callable[..., RunningStack],
    reviews: list[dict[str, str]],
    tmp_path: Path,
    backend: str,
) -> None:
    # One pool process, so the one killed is always the one scoring a chunk (with one per core,
    # the victim could be idle and the kill would test nothing).
    stack = launch(REVIEWSCORE_WORKER_CONCURRENCY="1", **worker_env(score_delay_s=SLOW_S))
    started = time.monotonic()
    job_id = upload(stack, reviews, tmp_path)
    killed: set[int] = set()
    for fraction in (0.1, 0.4, 0.7):
        wait_progress(stack, job_id, int(ROWS * fraction))
        # A fresh pool process (not one we killed) is scoring: kill it mid-job.
        victim = wait_for(
            lambda: next((p for p in pool_processes(stack) if p.pid not in killed), None),
            60,
            "a live pool process",
        )
        assert progress(stack, job_id) < ROWS, "the job ended before the fault"
        os.kill(victim.pid, signal.SIGKILL)
        killed.add(victim.pid)
    job, tally = finish_and_tally(f"worker pool SIGKILL x3 ({backend})", stack, job_id, started)
    assert job["status"] == "succeeded"
    assert tally.accepted == ROWS
    worker_log = stack.stack.children["worker"].log_path.read_text(errors="replace")
    assert len(killed) == 3
    # A kill can land between two chunks (the process idle for a moment); at least one must
    # have cut a chunk short, and that chunk was handed back and finished.
    assert worker_log.count("exited with 'signal 9 (SIGKILL)'") >= 1


@BOTH_BACKENDS
def test_redis_restarted_mid_job(
    launch: Callable[..., RunningStack],
    reviews: list[dict[str, str]],
    tmp_path: Path,
    backend: str,
) -> None:
    stack = launch(**worker_env(score_delay_s=SLOW_S))
    started = time.monotonic()
    job_id = upload(stack, reviews, tmp_path)
    wait_progress(stack, job_id, int(ROWS * 0.3))
    redis = stack.stack.redis
    assert redis is not None
    assert progress(stack, job_id) < ROWS, "the job ended before the fault"
    redis.stop()
    redis.start()
    job, tally = finish_and_tally(f"redis restart ({backend})", stack, job_id, started)
    assert job["status"] == "succeeded"
    assert tally.accepted == ROWS and tally.failed == 0


def test_redis_killed_mid_job(
    launch: Callable[..., RunningStack], reviews: list[dict[str, str]], tmp_path: Path
) -> None:
    # SIGKILL: no AOF flush, so up to a second of queue writes may be lost; the sweeper re-sends
    # chunks whose message is gone.
    stack = launch(**worker_env(score_delay_s=SLOW_S))
    started = time.monotonic()
    job_id = upload(stack, reviews, tmp_path)
    wait_progress(stack, job_id, int(ROWS * 0.3))
    redis = stack.stack.redis
    assert redis is not None and redis.process is not None
    assert progress(stack, job_id) < ROWS, "the job ended before the fault"
    redis.process.kill()
    redis.process.wait()
    redis.process = None
    redis.start()
    job, tally = finish_and_tally("redis SIGKILL", stack, job_id, started)
    assert job["status"] == "succeeded"
    assert tally.accepted == ROWS and tally.failed == 0


def test_api_killed_during_a_slow_upload(
    launch: Callable[..., RunningStack], reviews: list[dict[str, str]]
) -> None:
    stack = launch(REVIEWSCORE_UPLOAD_STALL_S="4")
    started = time.monotonic()

    def slow_body() -> Iterator[bytes]:
        yield b"id,text\n"
        for start in range(0, ROWS, 50):
            yield "".join(
                f'{r["id"]},"{r["text"].replace(chr(34), chr(34) * 2)}"\n'
                for r in reviews[start : start + 50]
            ).encode()
            time.sleep(0.05)

    outcome: dict[str, Any] = {}

    def send() -> None:
        try:
            with httpx.Client(base_url=stack.url, timeout=60) as http:
                outcome["response"] = http.post(
                    "/v1/jobs",
                    params={"id_column": "id", "keep_texts": "true"},
                    content=slow_body(),
                    headers={"Content-Type": "text/csv"},
                )
        except httpx.HTTPError as exc:
            outcome["error"] = exc

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    job = wait_for(
        lambda: next(
            (
                j
                for j in stack.client.jobs(limit=1)["jobs"]
                if j["status"] == "uploading" and j["received"] >= 500
            ),
            None,
        ),
        60,
        "the slow upload to store 500 rows",
    )
    api = stack.stack.children["api"].process
    os.killpg(api.pid, signal.SIGKILL)
    api.wait()
    sender.join(30)
    assert "error" in outcome, "the upload should have broken off with the API"
    stack.stack.spawn("api", stack.stack.api_args())
    wait_for(
        lambda: _healthy(stack.url),
        60,
        "the restarted API",
    )
    job, tally = finish_and_tally("API SIGKILL mid-upload", stack, job["id"], started)
    assert_rows_intact(stack, job["id"], reviews)
    assert job["status"] == "failed"
    assert job["error"].startswith("upload interrupted"), job["error"]
    assert f"{tally.accepted:,} rows" in job["error"]
    assert 500 <= tally.accepted < ROWS and tally.failed == 0


def test_client_gone_mid_upload(
    launch: Callable[..., RunningStack], reviews: list[dict[str, str]]
) -> None:
    stack = launch()
    started = time.monotonic()
    body = "".join(
        f'{r["id"]},"{r["text"].replace(chr(34), chr(34) * 2)}"\n' for r in reviews
    ).encode()
    body = b"id,text\n" + body
    port = int(stack.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(
            b"POST /v1/jobs?id_column=id&keep_texts=true HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: text/csv\r\n" + f"Content-Length: {len(body)}\r\n\r\n".encode()
        )
        conn.sendall(body[: len(body) // 2])  # half the file, then the client is gone
        job = wait_for(
            lambda: next(
                (j for j in stack.client.jobs(limit=1)["jobs"] if j["received"] >= 500), None
            ),
            60,
            "the upload to store 500 rows",
        )
    job, tally = finish_and_tally("client gone mid-upload", stack, job["id"], started)
    assert_rows_intact(stack, job["id"], reviews)
    assert job["status"] == "failed"
    assert job["error"].startswith("upload interrupted"), job["error"]
    assert f"{tally.accepted:,} rows" in job["error"]
    assert 500 <= tally.accepted < ROWS and tally.failed == 0


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_database_locked_while_workers_write(
    launch: Callable[..., RunningStack], reviews: list[dict[str, str]], tmp_path: Path
) -> None:
    stack = launch()
    started = time.monotonic()
    job_id = upload(stack, reviews, tmp_path)
    wait_progress(stack, job_id, int(ROWS * 0.2))
    path = stack.settings.database_url.removeprefix("sqlite:///")
    blocker = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # the write lock: every writer must now wait
        before = progress(stack, job_id)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:  # readers still see the job; it does not move
            assert progress(stack, job_id) == before
            time.sleep(0.25)
        blocker.execute("COMMIT")
    finally:
        blocker.close()
    job, tally = finish_and_tally("SQLite write lock held 3 s", stack, job_id, started)
    assert job["status"] == "succeeded" and tally.failed == 0
    # Writers waited for the lock instead of failing: no chunk needed a second attempt.
    assert count_rows(stack, job_id)["max_attempts"] == 1


def test_poison_row_fails_alone(
    launch: Callable[..., RunningStack], reviews: list[dict[str, str]], tmp_path: Path
) -> None:
    stack = launch(**worker_env(poison_marker=POISON))
    rows = [dict(r) for r in reviews]
    victim = ROWS // 2 + 17
    rows[victim]["text"] = f"{rows[victim]['text']} {POISON}"
    started = time.monotonic()
    job_id = upload(stack, rows, tmp_path)
    job, tally = finish_and_tally("poison row (scoring raises)", stack, job_id, started)
    assert job["status"] == "succeeded"
    assert (tally.accepted, tally.failed) == (ROWS, 1)
    with stack.http() as http:
        lines = http.get(f"/v1/jobs/{job_id}/results", params={"format": "jsonl"}).text
    failed = [json.loads(line) for line in lines.splitlines() if '"error": null' not in line]
    assert [f["id"] for f in failed] == [rows[victim]["id"]]
    assert failed[0]["error"].startswith("scoring failed: PoisonedTextError")


def test_row_that_kills_the_worker_is_given_up_after_the_attempt_cap(
    launch: Callable[..., RunningStack], reviews: list[dict[str, str]], tmp_path: Path
) -> None:
    # A text that kills the process (a segfault in the model, say) cannot be isolated like a
    # raise: its chunk is retried up to REVIEWSCORE_CHUNK_MAX_ATTEMPTS (3), then its rows fail
    # with the reason, and the job finishes instead of crash-looping.
    stack = launch(**worker_env(crash_marker=CRASH))
    rows = [dict(r) for r in reviews[:1000]]
    victim = 555  # data row 556: chunk 5 holds rows 501-600
    rows[victim]["text"] = f"{rows[victim]['text']} {CRASH}"
    started = time.monotonic()
    job_id = upload(stack, rows, tmp_path)
    job, tally = finish_and_tally("row that kills the worker", stack, job_id, started)
    assert job["status"] == "succeeded"
    assert (tally.accepted, tally.failed) == (1000, 100)
    with stack.http() as http:
        body = http.get(f"/v1/jobs/{job_id}/results", params={"format": "jsonl"}).text
    errors = {json.loads(line)["error"] for line in body.splitlines()[500:600]}
    assert errors == {"gave up after 3 attempts: the worker was lost"}
    assert count_rows(stack, job_id)["max_attempts"] == 4  # three crashes, then the give-up
