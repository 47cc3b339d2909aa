"""Deleting a job on real SQLite and PostgreSQL, in-process: a big job goes in short batches
that other uploads' writes get between, a delete and a chunk's completion never deadlock, and a
delete cut short is finished by the sweeper."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy import func, select, text, update

from reviewscore.core import chunks, jobs
from reviewscore.core.clock import db_now_plus
from reviewscore.core.db import session_scope, single_statement
from reviewscore.core.errors import JobNotFoundError
from reviewscore.core.schema import Chunk, InputRow, Job, JobStatus, Result
from reviewscore.core.settings import get_settings
from reviewscore.core.sweeper import sweep
from tests import factories as f
from tests.conftest import wait_for
from worker.cache import remember_scores, text_hash

pytestmark = pytest.mark.usefixtures("database")


def stored(table: Any, job_id: str) -> int:
    with session_scope(readonly=True) as s:
        return int(s.execute(select(func.count()).where(table.job_id == job_id)).scalar_one())


def scored_job(rows: int, chunk_size: int) -> str:
    job_id = f.make_job(rows, chunk_size)
    for seq in range(rows // chunk_size):
        assert f.score(job_id, seq)
    assert f.job(job_id).status is JobStatus.succeeded
    return job_id


def test_a_big_delete_goes_in_batches_that_another_upload_gets_between(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(jobs, "DELETE_BATCH_ROWS", 400)
    big = scored_job(4_000, 400)
    with session_scope() as s:
        other = jobs.create_job(
            s,
            model_name="stub",
            model_version="stub-1",
            filename=None,
            text_column="text",
            id_column=None,
        )
    seen: list[int] = []  # the big job's rows left, as each of the other upload's writes saw
    deleting = threading.Thread(target=jobs.delete_job, args=(big,))
    seq = 0

    def store_a_chunk() -> None:
        nonlocal seq
        with session_scope() as s:
            assert jobs.accepts_rows(s, other)
            chunks.add_chunk(s, other, seq, f.rows(10, start=seq * 10 + 1))
            left = s.execute(select(func.count()).where(InputRow.job_id == big)).scalar_one()
            if 0 < left < 4_000:  # mid-delete: the job is gone for readers already
                with pytest.raises(JobNotFoundError):
                    jobs.get_job(s, big)
            seen.append(left)
        seq += 1

    store_a_chunk()
    deleting.start()
    deadline = time.monotonic() + 30
    while deleting.is_alive() and time.monotonic() < deadline:
        store_a_chunk()
    deleting.join(timeout=30)
    assert not deleting.is_alive()
    # Some of the other upload's writes landed between two batches of the delete.
    assert [n for n in seen if 0 < n < 4_000], seen
    assert (stored(InputRow, big), stored(Result, big), stored(Chunk, big)) == (0, 0, 0)
    assert stored(InputRow, other) == seq * 10


@pytest.mark.parametrize("database", ["postgres"], indirect=True)
def test_a_delete_during_a_chunks_completion_waits_for_it_and_neither_deadlocks() -> None:
    job_id = f.make_job(20, 10)
    assert f.score(job_id, 0)
    jobs.mark_started(job_id, "CPU:0")
    work = f.claim(job_id, 1)
    assert work is not None
    written, go = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def complete() -> None:  # as the worker does: results, commit, completion, dedup cache
        try:
            with session_scope() as s:
                assert chunks.complete_chunk(s, work, f.results_for(work))
                written.set()
                assert go.wait(20)
            jobs.try_complete(job_id)
            with single_statement() as conn:
                remember_scores(conn, "stub-1", {text_hash("a late text"): (0.5, False)}, job_id)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    def delete() -> None:
        try:
            jobs.delete_job(job_id)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    completing = threading.Thread(target=complete)
    completing.start()
    assert written.wait(20)
    deleting = threading.Thread(target=delete)
    deleting.start()

    def delete_waits_on_a_lock() -> bool:
        with single_statement() as conn:
            waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            return bool(conn.execute(text(waiting)).scalar_one())

    wait_for(delete_waits_on_a_lock, 20, "the delete to wait for the completion's lock")
    go.set()
    for thread in (completing, deleting):
        thread.join(timeout=20)
        assert not thread.is_alive()
    assert errors == []
    assert (stored(InputRow, job_id), stored(Result, job_id), stored(Chunk, job_id)) == (0, 0, 0)
    with session_scope(readonly=True) as s:
        assert s.execute(select(func.count()).select_from(Job)).scalar_one() == 0
        assert s.execute(text("SELECT count(*) FROM score_cache")).scalar_one() == 0


@pytest.mark.parametrize("database", ["postgres"], indirect=True)
def test_completions_racing_a_delete_in_batches_neither_deadlock_nor_leave_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(jobs, "DELETE_BATCH_ROWS", 20)
    job_id = f.make_job(400, 10)
    claimed = [f.claim(job_id, seq) for seq in range(40)]
    errors: list[BaseException] = []

    def complete(work: chunks.ChunkWork) -> None:
        try:
            f.complete(work)  # written, or found fenced (the job is deleted): never an error
            with single_statement() as conn:
                remember_scores(conn, "stub-1", {text_hash(f"t{work.seq}"): (0.5, False)}, job_id)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    def delete() -> None:
        try:
            jobs.delete_job(job_id)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=complete, args=(w,)) for w in claimed if w is not None]
    threads.insert(len(threads) // 2, threading.Thread(target=delete))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive()
    assert errors == []
    assert (stored(InputRow, job_id), stored(Result, job_id), stored(Chunk, job_id)) == (0, 0, 0)
    with session_scope(readonly=True) as s:
        assert s.execute(text("SELECT count(*) FROM score_cache")).scalar_one() == 0


def test_a_delete_cut_short_is_finished_by_the_sweeper() -> None:
    job_id = scored_job(30, 10)
    with single_statement() as conn:  # marked deleted by a request whose process then died
        conn.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(status=JobStatus.cancelled, deleted_at=db_now_plus(-3600))
        )
    with pytest.raises(JobNotFoundError), session_scope(readonly=True) as s:
        jobs.get_job(s, job_id)
    report = sweep(get_settings(), queue_is_empty=lambda: True, enqueue=lambda *_: None)
    assert report.purged == [job_id]
    assert (stored(InputRow, job_id), stored(Result, job_id), stored(Chunk, job_id)) == (0, 0, 0)
