"""Job state: creating jobs and chunks, claiming and completing chunks, counters, the sweeper's queries."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from reviewscore.core.db import session_scope
from reviewscore.core.errors import JobNotFoundError, JobStateError
from reviewscore.core.ingest import ParsedRow
from reviewscore.core.schema import (
    Chunk,
    ChunkStatus,
    InputRow,
    Job,
    JobStatus,
    Result,
    ScoreCache,
    utcnow,
)

UPLOAD_INTERRUPTED = "upload interrupted"


def new_job_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class ChunkRow:
    row_num: int
    text: str
    error: str | None


@dataclass(frozen=True)
class ChunkWork:
    job_id: str
    seq: int
    model_name: str
    model_version: str
    attempt: int
    rows: list[ChunkRow]


@dataclass(frozen=True)
class RowResult:
    row_num: int
    p_positive: float | None
    truncated: bool
    error: str | None


def insert_ignoring_conflicts(session: Session, table: Any, rows: Sequence[dict[str, Any]]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING on both backends: re-runs write nothing twice."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    stmt: Any
    if dialect == "postgresql":
        stmt = postgresql.insert(table).on_conflict_do_nothing()
    elif dialect == "sqlite":
        stmt = sqlite.insert(table).on_conflict_do_nothing()
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        stmt = insert(table)
    session.execute(stmt, list(rows))


def _label(value: str | None, size: int = 255) -> str | None:
    # Names that come from the request (file name, column names) only label the job: drop NULs
    # (PostgreSQL text refuses them) and cut to the column's width (PostgreSQL enforces it).
    return None if value is None else value.replace("\x00", "")[:size]


def create_job(
    session: Session,
    *,
    model_name: str,
    model_version: str,
    filename: str | None,
    text_column: str,
    id_column: str | None,
    owner_key_id: int | None = None,
) -> Job:
    job = Job(
        id=new_job_id(),
        status=JobStatus.uploading,
        model_name=model_name,
        model_version=model_version,
        filename=_label(filename),
        text_column=_label(text_column),
        id_column=_label(id_column),
        owner_key_id=owner_key_id,
        received_rows=0,
        scored_rows=0,
        failed_rows=0,
        chunks_total=0,
    )
    session.add(job)
    return job


def add_chunk(session: Session, job_id: str, seq: int, rows: Sequence[ParsedRow]) -> None:
    """Stores one chunk's input rows and its chunk record; the caller commits, then enqueues."""
    session.execute(
        insert(InputRow),
        [
            {
                "job_id": job_id,
                "row_num": r.row_num,
                "ext_id": r.ext_id,
                "text": r.text,
                "error": r.error,
            }
            for r in rows
        ],
    )
    session.add(
        Chunk(
            job_id=job_id,
            seq=seq,
            first_row=rows[0].row_num,
            row_count=len(rows),
            status=ChunkStatus.queued,
            attempts=0,
            queued_at=utcnow(),
        )
    )
    session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(
            received_rows=Job.received_rows + len(rows),
            chunks_total=Job.chunks_total + 1,
            updated_at=utcnow(),
        )
    )


def _lock_job(session: Session, job_id: str) -> Job | None:
    return session.execute(
        select(Job).where(Job.id == job_id).with_for_update()
    ).scalar_one_or_none()


def _maybe_complete(session: Session, job: Job) -> None:
    if job.total_rows is None or job.scored_rows + job.failed_rows < job.total_rows:
        return
    if job.finished_at is None:
        job.finished_at = utcnow()
    if job.status in (JobStatus.uploading, JobStatus.queued, JobStatus.running):
        job.status = JobStatus.succeeded


def finish_upload(session: Session, job_id: str, error: str | None = None) -> Job:
    """Closes the upload: from now on the job completes when every received row has a result."""
    job = _lock_job(session, job_id)
    if job is None:
        raise JobNotFoundError(job_id)
    job.total_rows = job.received_rows
    job.upload_finished_at = utcnow()
    job.updated_at = utcnow()
    if error:
        job.status = JobStatus.failed
        job.error = error
    elif job.status == JobStatus.uploading:
        job.status = JobStatus.running if job.started_at else JobStatus.queued
    _maybe_complete(session, job)
    return job


def claim_chunk(
    session: Session, job_id: str, seq: int, *, lease_s: float, max_attempts: int
) -> ChunkWork | None:
    """Marks a chunk running for one attempt, or returns None when there is nothing to do."""
    job = _lock_job(session, job_id)
    chunk = session.get(Chunk, (job_id, seq), with_for_update=True)
    if job is None or chunk is None or chunk.status == ChunkStatus.done:
        return None
    if job.status == JobStatus.cancelled:
        return None
    chunk.attempts += 1
    if chunk.attempts > max_attempts:
        reason = (
            f"gave up after {max_attempts} attempts: {chunk.last_error or 'the worker was lost'}"
        )
        rows = _chunk_rows(session, chunk)
        _write_results(
            session, job, chunk, [RowResult(r.row_num, None, False, reason) for r in rows]
        )
        return None
    now = utcnow()
    chunk.status = ChunkStatus.running
    chunk.lease_until = now + timedelta(seconds=lease_s)
    if job.started_at is None:
        job.started_at = now
    if job.status == JobStatus.queued:
        job.status = JobStatus.running
    return ChunkWork(
        job_id=job_id,
        seq=seq,
        model_name=job.model_name,
        model_version=job.model_version,
        attempt=chunk.attempts,
        rows=_chunk_rows(session, chunk),
    )


def _chunk_rows(session: Session, chunk: Chunk) -> list[ChunkRow]:
    found = session.execute(
        select(InputRow.row_num, InputRow.text, InputRow.error)
        .where(
            InputRow.job_id == chunk.job_id,
            InputRow.row_num >= chunk.first_row,
            InputRow.row_num < chunk.first_row + chunk.row_count,
        )
        .order_by(InputRow.row_num)
    ).all()
    return [ChunkRow(row_num, text, error) for row_num, text, error in found]


def complete_chunk(
    session: Session, job_id: str, seq: int, results: Sequence[RowResult], device: str | None = None
) -> bool:
    """Writes a chunk's results and the job's counters in one transaction; False if already done."""
    job = _lock_job(session, job_id)
    chunk = session.get(Chunk, (job_id, seq), with_for_update=True)
    if job is None or chunk is None or chunk.status == ChunkStatus.done:
        return False
    if device and job.device is None:
        job.device = device
    _write_results(session, job, chunk, results)
    return True


def _write_results(session: Session, job: Job, chunk: Chunk, results: Sequence[RowResult]) -> None:
    insert_ignoring_conflicts(
        session,
        Result,
        [
            {
                "job_id": job.id,
                "row_num": r.row_num,
                "p_positive": r.p_positive,
                "truncated": r.truncated,
                "model_version": job.model_version,
                "error": r.error,
            }
            for r in results
        ],
    )
    failed = sum(1 for r in results if r.error is not None)
    chunk.status = ChunkStatus.done
    chunk.lease_until = None
    job.scored_rows += len(results) - failed
    job.failed_rows += failed
    job.updated_at = utcnow()
    _maybe_complete(session, job)


def record_chunk_error(session: Session, job_id: str, seq: int, error: str) -> None:
    """Hands a chunk back after a failed attempt: the sweeper or a retry picks it up again."""
    chunk = session.get(Chunk, (job_id, seq), with_for_update=True)
    if chunk is None or chunk.status == ChunkStatus.done:
        return
    chunk.status = ChunkStatus.queued
    chunk.lease_until = None
    chunk.queued_at = utcnow()
    chunk.last_error = error[:2000]


def get_job(session: Session, job_id: str, owner_key_id: int | None = None) -> Job:
    job = session.get(Job, job_id)
    if job is None or (owner_key_id is not None and job.owner_key_id != owner_key_id):
        raise JobNotFoundError(job_id)
    return job


def list_jobs(
    session: Session, *, limit: int, offset: int, owner_key_id: int | None = None
) -> tuple[list[Job], int]:
    query = select(Job)
    count = select(func.count()).select_from(Job)
    if owner_key_id is not None:
        query = query.where(Job.owner_key_id == owner_key_id)
        count = count.where(Job.owner_key_id == owner_key_id)
    jobs = session.execute(
        query.order_by(Job.created_at.desc(), Job.id).limit(limit).offset(offset)
    ).scalars()
    return list(jobs), session.execute(count).scalar_one()


def cancel_job(session: Session, job_id: str, owner_key_id: int | None = None) -> Job:
    get_job(session, job_id, owner_key_id)
    job = _lock_job(session, job_id)
    assert job is not None
    if JobStatus(job.status).is_final:
        raise JobStateError(
            f"job {job_id} is already {job.status}; only unfinished jobs can be cancelled"
        )
    job.status = JobStatus.cancelled
    job.finished_at = job.updated_at = utcnow()
    return job


def delete_job(session: Session, job_id: str, owner_key_id: int | None = None) -> None:
    job = get_job(session, job_id, owner_key_id)
    if job.upload_finished_at is None:
        # The upload would go on storing rows of a job that is gone (and fail on the foreign key).
        raise JobStateError(f"job {job_id} is still uploading; delete it once the upload has ended")
    # Children first: bulk deletes do not rely on the backend's ON DELETE CASCADE.
    session.execute(delete(Result).where(Result.job_id == job_id))
    session.execute(delete(InputRow).where(InputRow.job_id == job_id))
    session.execute(delete(Chunk).where(Chunk.job_id == job_id))
    session.execute(delete(Job).where(Job.id == job_id))


@dataclass(frozen=True)
class ResultLine:
    id: str
    p_positive: float | None
    label: str | None
    model_version: str | None
    truncated: bool | None
    error: str | None


def iter_results(job_id: str, page_size: int = 5000) -> Iterator[ResultLine]:
    """Results in input order, read page by page in short transactions (keyset pagination)."""
    last = 0
    while True:
        with session_scope(readonly=True) as session:
            page = session.execute(
                select(
                    InputRow.row_num,
                    InputRow.ext_id,
                    InputRow.error,
                    Result.p_positive,
                    Result.truncated,
                    Result.model_version,
                    Result.error,
                )
                .outerjoin(
                    Result,
                    (Result.job_id == InputRow.job_id) & (Result.row_num == InputRow.row_num),
                )
                .where(InputRow.job_id == job_id, InputRow.row_num > last)
                .order_by(InputRow.row_num)
                .limit(page_size)
            ).all()
        if not page:
            return
        for row_num, ext_id, in_error, p, truncated, version, error in page:
            has_result = version is not None
            yield ResultLine(
                id=ext_id if ext_id is not None else str(row_num),
                p_positive=p,
                label=None if p is None else ("positive" if p >= 0.5 else "negative"),
                model_version=version,
                truncated=truncated if has_result else None,
                error=error if has_result else (in_error or "not scored yet"),
            )
        last = page[-1][0]


# --- the sweeper's queries -------------------------------------------------------------------


def expired_running_chunks(session: Session, now: datetime) -> list[tuple[str, int]]:
    found = session.execute(
        select(Chunk.job_id, Chunk.seq).where(
            Chunk.status == ChunkStatus.running, Chunk.lease_until < now
        )
    ).all()
    if found:
        session.execute(
            update(Chunk)
            .where(Chunk.status == ChunkStatus.running, Chunk.lease_until < now)
            .values(status=ChunkStatus.queued, lease_until=None, queued_at=now)
        )
    return [(job_id, seq) for job_id, seq in found]


def stale_queued_chunks(session: Session, older_than: datetime) -> list[tuple[str, int]]:
    found = session.execute(
        select(Chunk.job_id, Chunk.seq)
        .join(Job, Job.id == Chunk.job_id)
        .where(
            Chunk.status == ChunkStatus.queued,
            Chunk.queued_at < older_than,
            Job.status != JobStatus.cancelled,
        )
    ).all()
    keys = [(job_id, seq) for job_id, seq in found]
    for job_id, seq in keys:
        session.execute(
            update(Chunk).where(Chunk.job_id == job_id, Chunk.seq == seq).values(queued_at=utcnow())
        )
    return keys


def fail_stalled_uploads(session: Session, older_than: datetime) -> list[str]:
    stalled = (
        session.execute(
            select(Job.id).where(Job.status == JobStatus.uploading, Job.updated_at < older_than)
        )
        .scalars()
        .all()
    )
    for job_id in stalled:
        job = finish_upload(session, job_id)
        job.status = JobStatus.failed
        job.error = (
            f"{UPLOAD_INTERRUPTED}: no data arrived for a while; the {job.received_rows:,} rows "
            "received before the cut were kept and scored"
        )
    return list(stalled)


def purge_old_jobs(session: Session, older_than: datetime) -> list[str]:
    old = (
        session.execute(
            select(Job.id).where(Job.finished_at.is_not(None), Job.finished_at < older_than)
        )
        .scalars()
        .all()
    )
    for job_id in old:
        delete_job(session, job_id)
    return list(old)


# --- dedup cache -----------------------------------------------------------------------------


def cached_scores(
    session: Session, model_version: str, hashes: Sequence[bytes]
) -> dict[bytes, tuple[float, bool]]:
    found: dict[bytes, tuple[float, bool]] = {}
    unique = list(set(hashes))
    for start in range(0, len(unique), 500):
        part = unique[start : start + 500]
        for text_hash, p, truncated in session.execute(
            select(ScoreCache.text_hash, ScoreCache.p_positive, ScoreCache.truncated).where(
                ScoreCache.model_version == model_version, ScoreCache.text_hash.in_(part)
            )
        ):
            found[text_hash] = (p, truncated)
    return found


def remember_scores(
    session: Session, model_version: str, scores: dict[bytes, tuple[float, bool]]
) -> None:
    insert_ignoring_conflicts(
        session,
        ScoreCache,
        [
            {"model_version": model_version, "text_hash": h, "p_positive": p, "truncated": t}
            for h, (p, t) in scores.items()
        ],
    )
