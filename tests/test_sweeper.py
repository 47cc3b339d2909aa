"""The sweeper on real SQLite and PostgreSQL, in-process: lost work handed back, stalled
uploads closed, missed completions made, old jobs purged, and one bad job never stops a sweep."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, update

from reviewscore.core import jobs, sweeper
from reviewscore.core.clock import db_now_plus
from reviewscore.core.db import session_scope, single_statement
from reviewscore.core.schema import Chunk, InputRow, Job, JobStatus, Result
from reviewscore.core.settings import get_settings
from tests import factories as f

pytestmark = pytest.mark.usefixtures("database")


def run_sweep(queue_empty: bool = True) -> tuple[sweeper.SweepReport, list[tuple[str, int]]]:
    sent: list[tuple[str, int]] = []
    report = sweeper.sweep(
        get_settings(),
        queue_is_empty=lambda: queue_empty,
        enqueue=lambda job_id, seq: sent.append((job_id, seq)),
    )
    return report, sent


def age(table: type, column: str, seconds: float, **where: object) -> None:
    """Moves a time stamp into the past, on the database's clock."""
    with single_statement() as conn:
        stmt = update(table).values({column: db_now_plus(-seconds)})
        for name, value in where.items():
            stmt = stmt.where(getattr(table, name) == value)
        conn.execute(stmt)


def test_a_chunk_whose_lease_ran_out_is_sent_again_and_then_finishes() -> None:
    job_id = f.make_job(20, 10)
    assert f.claim(job_id, 0) is not None and f.claim(job_id, 1) is not None
    age(Chunk, "lease_until", 1, job_id=job_id, seq=0)
    report, sent = run_sweep()
    assert sent == [(job_id, 0)] and report.expired == [(job_id, 0)]
    assert f.score(job_id, 0)


def test_a_queued_chunk_is_sent_again_only_when_the_queue_is_empty() -> None:
    job_id = f.make_job(10, 10)
    age(Chunk, "queued_at", get_settings().queued_grace_s + 1)
    assert run_sweep(queue_empty=False)[1] == []
    assert run_sweep(queue_empty=True)[1] == [(job_id, 0)]
    assert run_sweep(queue_empty=True)[1] == [], "re-sent once per grace period, not per sweep"


def test_a_stalled_upload_is_closed_and_its_rows_are_kept_and_scored() -> None:
    job_id = f.make_job(10, 10, close_upload=False)
    age(Job, "created_at", get_settings().upload_stall_s + 1, id=job_id)
    age(Chunk, "created_at", get_settings().upload_stall_s + 1, job_id=job_id)
    report, _ = run_sweep()
    assert report.stalled == [job_id]
    closed = f.job(job_id)
    assert closed.total_rows == 10 and closed.error and "upload interrupted" in closed.error
    assert f.score(job_id, 0)
    assert f.job(job_id).status is JobStatus.failed


def test_an_upload_still_sending_is_not_stalled() -> None:
    job_id = f.make_job(10, 10, close_upload=False)
    age(Job, "created_at", get_settings().upload_stall_s + 1, id=job_id)
    assert run_sweep()[0].stalled == []


def test_a_job_cancelled_during_an_upload_that_never_ended_is_closed_and_purged() -> None:
    job_id = f.make_job(10, 10, close_upload=False)
    with session_scope() as s:
        jobs.cancel_job(s, job_id)
    age(Job, "created_at", get_settings().upload_stall_s + 1, id=job_id)
    age(Chunk, "created_at", get_settings().upload_stall_s + 1, job_id=job_id)
    assert run_sweep()[0].stalled == [job_id]
    assert f.job(job_id).status is JobStatus.cancelled
    age(Job, "finished_at", (get_settings().job_retention_days + 1) * 86400, id=job_id)
    assert run_sweep()[0].purged == [job_id]


def test_purge_removes_only_finished_jobs_past_retention_with_all_their_rows() -> None:
    old, recent, unfinished = f.make_job(5, 5), f.make_job(5, 5), f.make_job(5, 5)
    assert f.score(old, 0) and f.score(recent, 0)
    retention_s = get_settings().job_retention_days * 86400
    age(Job, "finished_at", retention_s + 60, id=old)
    age(Job, "finished_at", retention_s - 60, id=recent)
    assert run_sweep()[0].purged == [old]
    with session_scope(readonly=True) as s:
        for table, key in ((Job, Job.id), (Chunk, Chunk.job_id), (InputRow, InputRow.job_id),
                           (Result, Result.job_id)):  # fmt: skip
            assert s.execute(select(func.count()).where(key == old)).scalar_one() == 0, table
    assert f.job(recent).scored_rows == 5 and f.job(unfinished).received_rows == 5


def test_one_job_that_cannot_be_purged_does_not_stop_the_sweep(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bad, good, lost = f.make_job(5, 5), f.make_job(5, 5), f.make_job(10, 10)
    assert f.score(bad, 0) and f.score(good, 0)
    for job_id in (bad, good):
        age(Job, "finished_at", (get_settings().job_retention_days + 1) * 86400, id=job_id)
    assert f.claim(lost, 0) is not None
    age(Chunk, "lease_until", 1, job_id=lost)
    delete_job = jobs.delete_job

    def failing_for_bad(job_id: str, owner_key_id: int | None = None) -> None:
        if job_id == bad:
            raise RuntimeError("disk full")
        delete_job(job_id, owner_key_id)

    monkeypatch.setattr(jobs, "delete_job", failing_for_bad)
    report, sent = run_sweep()
    assert report.purged == [good] and len(report.errors) == 1
    assert sent == [(lost, 0)]


def test_a_job_whose_completion_was_missed_is_completed() -> None:
    job_id = f.make_job(10, 10)
    work = f.claim(job_id, 0)
    assert work is not None
    with session_scope() as s:
        from reviewscore.core import chunks

        chunks.complete_chunk(s, work, f.results_for(work))
    assert run_sweep()[0].completed == [job_id]
    assert f.job(job_id).status is JobStatus.succeeded


def parts_job_with_a_dead_part() -> str:
    """A job in parts with part 1 stored and part 2 claimed by a request that died."""
    import io

    from reviewscore.core import part_uploads, parts
    from reviewscore.core.ingest import UploadOptions
    from reviewscore.core.model_registry import ModelInfo

    model = ModelInfo(name="stub", version="stub-1", architecture="stub")
    job_id = part_uploads.create_parts_job(UploadOptions(), model=model)
    body = b"text\n" + b"".join(b"review %d\n" % i for i in range(30))
    part_uploads.store_part(
        io.BytesIO(body), job_id, 1, content_type=None, settings=get_settings(), enqueue=noop
    )
    parts.claim(job_id, 2, stale_s=30)
    return job_id


def noop(job_id: str, seq: int) -> None:
    pass


def test_an_upload_in_parts_waits_for_its_next_part_past_the_stall_time() -> None:
    job_id = parts_job_with_a_dead_part()
    age(Job, "created_at", get_settings().upload_stall_s + 1, id=job_id)
    age(Chunk, "created_at", get_settings().upload_stall_s + 1, job_id=job_id)
    report, _ = run_sweep()
    assert report.stalled == []
    assert f.job(job_id).status is JobStatus.uploading


def test_an_upload_in_parts_idle_past_its_ttl_ends_failed_with_its_stored_parts_scored() -> None:
    from reviewscore.core.schema import JobPart

    job_id = parts_job_with_a_dead_part()
    ttl = get_settings().parts_upload_ttl_s
    age(Job, "created_at", ttl + 1, id=job_id)
    age(JobPart, "updated_at", ttl + 1, job_id=job_id)
    report, _ = run_sweep()
    assert report.stalled == [job_id]
    job = f.job(job_id)
    assert job.total_rows == 30 and "REVIEWSCORE_PARTS_UPLOAD_TTL_S" in (job.error or "")
    with session_scope(readonly=True) as session:
        left = session.execute(select(JobPart.number).where(JobPart.job_id == job_id)).all()
    assert [n for (n,) in left] == [1], "the dead request's part is dropped"
