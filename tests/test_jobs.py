"""Job state on a real (SQLite) database: chunks are claimed, scored once, and jobs complete."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from reviewscore.core import jobs
from reviewscore.core.db import make_engine, session_scope
from reviewscore.core.ingest import ParsedRow
from reviewscore.core.migrate import upgrade
from reviewscore.core.schema import Job, Result


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    upgrade(url)
    return make_engine(url)


def make_job(engine: Engine, rows: int, chunk: int) -> str:
    with session_scope(engine) as s:
        job_id = jobs.create_job(
            s,
            model_name="m",
            model_version="m-1",
            filename=None,
            text_column="text",
            id_column=None,
        ).id
    parsed = [ParsedRow(i, None, f"text {i}", None) for i in range(1, rows + 1)]
    for seq, start in enumerate(range(0, rows, chunk)):
        with session_scope(engine) as s:
            jobs.add_chunk(s, job_id, seq, parsed[start : start + chunk])
    return job_id


def score(engine: Engine, job_id: str, seq: int) -> bool:
    with session_scope(engine) as s:
        work = jobs.claim_chunk(s, job_id, seq, lease_s=60, max_attempts=3)
    if work is None:
        return False
    results = [jobs.RowResult(r.row_num, 0.9, False, None) for r in work.rows]
    with session_scope(engine) as s:
        return jobs.complete_chunk(s, job_id, seq, results)


def test_job_succeeds_when_the_last_row_is_scored(engine: Engine) -> None:
    job_id = make_job(engine, rows=25, chunk=10)
    assert score(engine, job_id, 0) and score(engine, job_id, 1)
    with session_scope(engine) as s:
        jobs.finish_upload(s, job_id)
    assert score(engine, job_id, 2)
    with session_scope(engine) as s:
        job = s.get(Job, job_id)
        assert job is not None
        assert (job.status, job.total_rows, job.scored_rows) == ("succeeded", 25, 25)


def test_a_chunk_delivered_twice_is_written_once(engine: Engine) -> None:
    job_id = make_job(engine, rows=10, chunk=10)
    assert score(engine, job_id, 0)
    assert not score(engine, job_id, 0)
    with session_scope(engine) as s:
        assert s.execute(select(func.count()).select_from(Result)).scalar_one() == 10
        job = s.get(Job, job_id)
        assert job is not None and job.scored_rows == 10


def test_a_chunk_that_keeps_failing_ends_with_its_rows_failed(engine: Engine) -> None:
    job_id = make_job(engine, rows=5, chunk=5)
    with session_scope(engine) as s:
        jobs.finish_upload(s, job_id)
    for _ in range(3):
        with session_scope(engine) as s:
            assert jobs.claim_chunk(s, job_id, 0, lease_s=60, max_attempts=3) is not None
        with session_scope(engine) as s:
            jobs.record_chunk_error(s, job_id, 0, "RuntimeError: boom")
    with session_scope(engine) as s:
        assert jobs.claim_chunk(s, job_id, 0, lease_s=60, max_attempts=3) is None
    with session_scope(engine) as s:
        job = s.get(Job, job_id)
        assert job is not None and (job.status, job.failed_rows) == ("succeeded", 5)
        errors = s.execute(select(Result.error)).scalars().all()
        assert errors == ["gave up after 3 attempts: RuntimeError: boom"] * 5


def test_a_cancelled_job_stops_handing_out_chunks(engine: Engine) -> None:
    job_id = make_job(engine, rows=20, chunk=10)
    with session_scope(engine) as s:
        jobs.cancel_job(s, job_id)
    assert not score(engine, job_id, 0)
