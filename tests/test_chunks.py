"""The chunk protocol on real SQLite and PostgreSQL, in-process (the fast layer): claims,
completions, redeliveries, give-ups, leases and job completion. Counters are checked against
the result rows, so a double count or a lost row shows."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select, update

from reviewscore.core import chunks, jobs
from reviewscore.core.clock import db_now, db_now_plus
from reviewscore.core.db import session_scope, single_statement
from reviewscore.core.schema import Chunk, ChunkStatus, JobStatus, Result
from tests import factories as f

pytestmark = pytest.mark.usefixtures("database")


def test_a_job_succeeds_only_once_its_upload_is_closed_and_every_row_has_a_result() -> None:
    job_id = f.make_job(25, 10, close_upload=False)
    assert f.score(job_id, 0) and f.score(job_id, 1) and f.score(job_id, 2)
    running = f.job(job_id)
    assert (running.status, running.finished, running.scored_rows) == ("uploading", False, 25)
    f.close(job_id)
    done = f.job(job_id)
    assert (done.status, done.finished, done.total_rows) == (JobStatus.succeeded, True, 25)
    assert f.tally(job_id) == f.Tally(25, 0, 25, 0)


def test_the_last_chunk_completes_the_job_and_stamps_its_times_from_the_database() -> None:
    job_id = f.make_job(20, 10)
    assert f.job(job_id).status is JobStatus.queued
    work = f.claim(job_id, 0)
    assert work is not None
    jobs.mark_started(job_id, "CPU:0")
    assert f.job(job_id).status is JobStatus.running
    f.complete(work)
    assert f.job(job_id).status is JobStatus.running
    assert f.score(job_id, 1)
    done = f.job(job_id)
    assert done.status is JobStatus.succeeded and done.device == "CPU:0"
    assert done.created_at <= done.started_at <= done.finished_at  # type: ignore[operator]


def test_a_chunk_delivered_twice_is_written_and_counted_once() -> None:
    job_id = f.make_job(10, 10)
    first, second = f.claim(job_id, 0), f.claim(job_id, 0)  # a redelivery while the first runs
    assert first is not None and second is not None and second.attempt == 2
    assert f.complete(second)
    assert not f.complete(first, p=0.1)  # the late write is discarded, not added
    tally = f.tally(job_id)
    assert tally == f.Tally(10, 0, 10, 0) and tally.consistent
    with session_scope(readonly=True) as s:
        assert s.execute(select(Result.p_positive)).scalars().all() == [pytest.approx(0.9)] * 10
    assert not f.score(job_id, 0)  # and once done, a third delivery claims nothing


def test_concurrent_completions_of_one_chunk_count_it_once() -> None:
    job_id = f.make_job(50, 50)
    works = [f.claim(job_id, 0, max_attempts=10) for _ in range(4)]
    outcomes: list[bool] = []
    threads = [
        threading.Thread(target=lambda w=w: outcomes.append(f.complete(w)))  # type: ignore[misc]
        for w in works
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == [False, False, False, True]
    assert f.tally(job_id) == f.Tally(50, 0, 50, 0)
    assert f.job(job_id).status is JobStatus.succeeded


def test_rows_failed_at_ingest_are_counted_failed_with_their_reason() -> None:
    job_id = f.make_job(5, 5, errors={2: "empty text"})
    assert f.score(job_id, 0)
    assert f.tally(job_id) == f.Tally(4, 1, 5, 1)
    with session_scope(readonly=True) as s:
        assert (
            s.execute(select(Result.error).where(Result.row_num == 2)).scalar_one() == "empty text"
        )


def test_a_chunk_that_keeps_failing_ends_with_its_rows_failed() -> None:
    job_id = f.make_job(5, 5, errors={3: "empty text"})
    for _ in range(3):
        work = f.claim(job_id, 0)
        assert work is not None
        chunks.hand_back(work, "RuntimeError: boom")
    assert f.claim(job_id, 0) is None
    done = f.job(job_id)
    assert (done.status, done.scored_rows, done.failed_rows) == (JobStatus.succeeded, 0, 5)
    with session_scope(readonly=True) as s:
        errors = s.execute(select(Result.error).order_by(Result.row_num)).scalars().all()
    reason = "gave up after 3 attempts: RuntimeError: boom"
    assert errors == [reason, reason, "empty text", reason, reason]


def test_a_lease_is_renewed_by_its_holder_and_lost_to_a_later_claim() -> None:
    job_id = f.make_job(10, 10)
    first = f.claim(job_id, 0, lease_s=30)
    assert first is not None and chunks.renew_lease(first, 30)
    second = f.claim(job_id, 0)
    assert second is not None
    assert not chunks.renew_lease(first, 30), "a stale attempt must learn it lost the chunk"
    assert chunks.renew_lease(second, 30)


def test_the_lease_is_set_on_the_database_clock() -> None:
    job_id = f.make_job(10, 10)
    assert f.claim(job_id, 0, lease_s=120) is not None
    with single_statement() as conn:
        lease, low, high = conn.execute(
            select(Chunk.lease_until, db_now_plus(110), db_now_plus(130)).where(
                Chunk.job_id == job_id
            )
        ).one()
    assert low < lease < high


def test_a_cancelled_job_hands_out_nothing_and_takes_no_late_writes() -> None:
    job_id = f.make_job(20, 10)
    work = f.claim(job_id, 0)
    assert work is not None
    with session_scope() as s:
        jobs.cancel_job(s, job_id)
    assert f.claim(job_id, 1) is None
    assert not f.complete(work)
    assert not chunks.renew_lease(work, 30)
    cancelled = f.job(job_id)
    assert (cancelled.status, cancelled.finished, cancelled.scored_rows) == ("cancelled", True, 0)


def test_an_upload_error_keeps_the_job_running_until_its_rows_are_done_then_failed() -> None:
    job_id = f.make_job(20, 10, close_upload=False)
    f.close(job_id, error="upload interrupted after 20 rows received")
    interrupted = f.job(job_id)
    assert interrupted.status is JobStatus.queued and not interrupted.finished
    assert interrupted.error and interrupted.total_rows == 20
    assert f.score(job_id, 0) and f.score(job_id, 1)
    failed = f.job(job_id)
    assert (failed.status, failed.finished, failed.scored_rows) == (JobStatus.failed, True, 20)


def test_completion_missed_by_a_worker_is_made_by_the_next_statement() -> None:
    job_id = f.make_job(10, 10)
    work = f.claim(job_id, 0)
    assert work is not None
    with session_scope() as s:  # the worker died between its commit and the completion
        chunks.complete_chunk(s, work, f.results_for(work))
    assert f.job(job_id).status is JobStatus.queued
    assert jobs.try_complete(job_id)
    assert not jobs.try_complete(job_id)
    assert f.job(job_id).status is JobStatus.succeeded


def test_a_finished_job_cannot_be_cancelled_and_an_uploading_one_cannot_be_deleted() -> None:
    done = f.make_job(5, 5)
    assert f.score(done, 0)
    uploading = f.make_job(5, 5, close_upload=False)
    from reviewscore.core.errors import JobStateError

    with pytest.raises(JobStateError, match="already succeeded"), session_scope() as s:
        jobs.cancel_job(s, done)
    with pytest.raises(JobStateError, match="still uploading"):
        jobs.delete_job(uploading)
    with session_scope() as s:  # cancelled during its upload: final, and it can go
        jobs.cancel_job(s, uploading)
    jobs.delete_job(uploading)


def test_chunk_status_and_counts_are_the_ledger_of_the_job() -> None:
    job_id = f.make_job(30, 10, errors={11: "empty text"})
    for seq in range(3):
        assert f.score(job_id, seq)
    with session_scope(readonly=True) as s:
        ledger = s.execute(
            select(Chunk.seq, Chunk.status, Chunk.scored_rows, Chunk.failed_rows)
            .where(Chunk.job_id == job_id)
            .order_by(Chunk.seq)
        ).all()
    assert ledger == [(0, "done", 10, 0), (1, "done", 9, 1), (2, "done", 10, 0)]
    assert f.tally(job_id).consistent


def test_expired_and_past_stamps_compare_on_the_database_clock() -> None:
    job_id = f.make_job(10, 10)
    assert f.claim(job_id, 0) is not None
    with single_statement() as conn:
        conn.execute(update(Chunk).values(lease_until=db_now_plus(-1)))
        expired = conn.execute(
            select(Chunk.seq).where(
                Chunk.lease_until < db_now(), Chunk.status == ChunkStatus.running
            )
        ).all()
    assert expired == [(0,)]


def test_a_cancel_that_returned_sees_no_completion_after_it() -> None:
    """Issue 20, defect 4: a completion in flight when a cancel arrives either lands before the
    cancel (the cancel waits for it) or not at all; what the cancel's caller read stays true."""
    job_id = f.make_job(40, 20)
    work = f.claim(job_id, 0)
    assert work is not None
    written, release = threading.Event(), threading.Event()

    def complete_slowly() -> None:
        with session_scope() as session:
            chunks.complete_chunk(session, work, f.results_for(work))
            written.set()
            release.wait(10)  # the transaction stays open: a slow commit

    worker = threading.Thread(target=complete_slowly)
    worker.start()
    assert written.wait(10)
    seen: dict[str, int] = {}

    def cancel() -> None:
        with session_scope() as session:
            jobs.cancel_job(session, job_id)
        seen["scored"] = f.job(job_id).scored_rows

    canceller = threading.Thread(target=cancel)
    canceller.start()
    canceller.join(1.0)  # the cancel waits for the completion in flight (PostgreSQL, SQLite)
    release.set()
    worker.join()
    canceller.join(30)
    assert f.job(job_id).status is JobStatus.cancelled
    assert f.job(job_id).scored_rows == seen["scored"], "scored moved after the cancel returned"
