"""Retention: the sweeper's purge removes finished jobs past retention, with all their rows, and
leaves recent or unfinished jobs alone."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine, func, select, update

from reviewscore.core import jobs
from reviewscore.core.db import make_engine, session_scope
from reviewscore.core.ingest import ParsedRow
from reviewscore.core.migrate import upgrade
from reviewscore.core.schema import Chunk, InputRow, Job, Result, utcnow


def finished_job(engine: Engine, rows: int, finished_days_ago: float | None) -> str:
    """A job with one scored chunk; finished that many days ago (None: still uploading)."""
    with session_scope(engine) as s:
        job_id = jobs.create_job(
            s,
            model_name="m",
            model_version="m-1",
            filename=None,
            text_column="text",
            id_column=None,
        ).id
    with session_scope(engine) as s:
        jobs.add_chunk(
            s, job_id, 0, [ParsedRow(i, None, f"t{i}", None) for i in range(1, rows + 1)]
        )
    if finished_days_ago is None:
        return job_id
    with session_scope(engine) as s:
        jobs.finish_upload(s, job_id)
    with session_scope(engine) as s:
        work = jobs.claim_chunk(s, job_id, 0, lease_s=60, max_attempts=3)
        assert work is not None
    with session_scope(engine) as s:
        jobs.complete_chunk(
            s, job_id, 0, [jobs.RowResult(r.row_num, 0.7, False, None) for r in work.rows]
        )
    with session_scope(engine) as s:
        s.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(finished_at=utcnow() - timedelta(days=finished_days_ago))
        )
    return job_id


def count(engine: Engine, table: type, job_id: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(table).where(table.job_id == job_id)  # type: ignore[attr-defined]
            ).scalar_one()
        )


def test_purge_removes_only_finished_jobs_past_retention(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'retention.db'}"
    upgrade(url)
    engine = make_engine(url)
    old = finished_job(engine, 5, finished_days_ago=31)
    recent = finished_job(engine, 5, finished_days_ago=29)
    unfinished = finished_job(engine, 5, finished_days_ago=None)
    with session_scope(engine) as s:
        purged = jobs.purge_old_jobs(s, utcnow() - timedelta(days=30))
    assert purged == [old]
    for table in (Job, Chunk, InputRow, Result):
        key = Job.id if table is Job else table.job_id  # type: ignore[attr-defined]
        with engine.connect() as conn:
            n = conn.execute(select(func.count()).select_from(table).where(key == old)).scalar_one()
        assert n == 0, table.__tablename__
    assert count(engine, Result, recent) == 5 and count(engine, InputRow, unfinished) == 5
    with session_scope(engine) as s:
        assert jobs.purge_old_jobs(s, utcnow() - timedelta(days=30)) == []
    engine.dispose()
