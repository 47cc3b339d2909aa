"""Job lifecycle: create a job, close its upload, mark it started, complete, cancel, expire or
delete it.

The server owns a job's state. Its status moves uploading -> queued -> running -> one of
succeeded, failed, cancelled or expired, and those four are final: nothing about the job
changes any more (`JobStatus.is_final`, shown to clients as `finished`). Counts are summed from the chunks'
ledger (see schema.Job), so the job's own row is written only at these few transitions, each
one short statement, never by a worker counting its chunk.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC
from typing import Any

from sqlalchemy import (
    String,
    and_,
    case,
    cast,
    delete,
    exists,
    func,
    literal,
    not_,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Update

from reviewscore.core import webhooks
from reviewscore.core.clock import db_now
from reviewscore.core.db import get_engine, session_scope
from reviewscore.core.errors import JobNotFoundError, JobStateError
from reviewscore.core.schema import (
    FINAL_STATUSES,
    Chunk,
    ChunkStatus,
    ChunkText,
    IdempotencyKey,
    InputRow,
    Job,
    JobLabel,
    JobPart,
    JobStatus,
    Result,
    ScoreCache,
)
from reviewscore.core.urls import shown

UPLOAD_INTERRUPTED = "upload interrupted"
UNFINISHED = [s for s in JobStatus if s not in FINAL_STATUSES]


def new_job_id() -> str:
    return uuid.uuid4().hex


def label(value: str | None, size: int = 255) -> str | None:
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
    input_format: str | None = None,
    encoding: str | None = None,
    delimiter: str | None = None,
    keep_columns: list[str] | None = None,
    result_url: str | None = None,
    result_format: str | None = None,
    keep_texts: bool = False,
    source_url: str | None = None,
    labels: dict[str, str] | None = None,
    deadline_at: Any = None,
    retention_s: float | None = None,
    max_failed_fraction: float | None = None,
    callback_url: str | None = None,
    label_column: str | None = None,
    positive_from: float | None = None,
) -> str:
    """A new job, `uploading`; the labels and terms come from core/job_options.py."""
    job = Job(
        id=new_job_id(),
        status=JobStatus.uploading,
        model_name=model_name,
        model_version=model_version,
        filename=label(filename),
        text_column=label(text_column),
        id_column=label(id_column),
        owner_key_id=owner_key_id,
        input_format=input_format,
        encoding=encoding,
        delimiter=delimiter,
        keep_columns=keep_columns or None,
        result_url=result_url,
        result_format=result_format if result_url else None,
        keep_texts=keep_texts,
        label_column=label(label_column),
        positive_from=positive_from,
        # Never its query: a presigned URL's signature must not sit in the database.
        source_url=shown(source_url) if source_url else None,
        deadline_at=deadline_at,
        retention_s=retention_s,
        max_failed_fraction=max_failed_fraction,
        labels=[JobLabel(key=k, value=v) for k, v in (labels or {}).items()],
        # Kept whole, as result_url is: its query may carry the receiver's token.
        callback_url=callback_url,
    )
    session.add(job)
    session.flush()
    return job.id


def accepts_rows(session: Session, job_id: str) -> bool:
    """Whether an upload may still add rows: the job exists, is still uploading and its upload
    is not closed (by a cancel, or by the sweeper). The job's row is share-locked until the
    caller commits the rows, so a close cannot slip in between (nothing is added to a final
    job), while parts stored at once and chunks completing never wait for each other."""
    found = session.execute(
        select(Job.status, Job.upload_finished_at)
        .where(Job.id == job_id)
        .with_for_update(read=True)
    ).one_or_none()
    return found is not None and found[0] is JobStatus.uploading and found[1] is None


def touch_upload(job_id: str) -> None:
    """The upload's bytes are still arriving (see sweeper.stalled_uploads)."""
    with get_engine().begin() as conn:
        conn.execute(
            update(Job)
            .where(Job.id == job_id, Job.upload_finished_at.is_(None))
            .values(upload_seen_at=db_now())
        )


def finish_upload(session: Session, job_id: str, error: str | None = None) -> None:
    """Closes the upload: the total is what was received, and from now on the job completes
    when every received row has its result. An `error` makes the job end `failed` (its rows
    are still scored). A job cancelled meanwhile keeps its status."""
    received = (
        select(func.coalesce(func.sum(Chunk.row_count), 0))
        .where(Chunk.job_id == job_id)
        .scalar_subquery()
    )
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.upload_finished_at.is_(None))
        .values(
            total_rows=received,
            upload_finished_at=db_now(),
            updated_at=db_now(),
            error=func.coalesce(Job.error, error),
            status=case(
                (
                    Job.status == JobStatus.uploading,
                    case((Job.started_at.is_(None), JobStatus.queued), else_=JobStatus.running),
                ),
                else_=Job.status,
            ),
        )
    )


def mark_started(job_id: str, device: str | None) -> None:
    """The first claim of a job's chunk: queued -> running, the start time and the device.
    One autocommit statement, so the job's row is locked only while it runs."""
    with get_engine().begin() as conn:
        conn.execute(
            update(Job)
            .where(
                Job.id == job_id,
                or_(
                    Job.started_at.is_(None),
                    Job.status == JobStatus.queued,
                    Job.device.is_(None),
                ),
            )
            .values(
                started_at=func.coalesce(Job.started_at, db_now()),
                device=func.coalesce(Job.device, device),
                status=case((Job.status == JobStatus.queued, JobStatus.running), else_=Job.status),
            )
        )


def _failed_rows(job_id: str) -> Any:
    return (
        select(func.coalesce(func.sum(Chunk.failed_rows), 0))
        .where(Chunk.job_id == job_id)
        .scalar_subquery()
    )


def completion(job_id: str) -> Update:
    """The statement that ends a job: complete once its upload is closed and no chunk is open,
    or `failed` early once its failed rows pass its max_failed_fraction of the total (known
    once the upload is closed). The decision and the write are one statement, run after each
    chunk's commit, so two workers finishing chunks at once cannot both miss it nor both make
    it; it is not in the chunk's own transaction, where the job's row is share-locked by
    every completion in flight and two of them writing it would deadlock."""
    open_chunk = exists().where(Chunk.job_id == job_id, Chunk.status != ChunkStatus.done)
    failed = _failed_rows(job_id)
    over_limit = and_(
        Job.max_failed_fraction.is_not(None),
        Job.total_rows.is_not(None),
        failed > Job.max_failed_fraction * Job.total_rows,
    )
    why = (
        literal("failed rows ")
        + cast(failed, String)
        + literal(" of ")
        + cast(Job.total_rows, String)
        + literal(" passed max_failed_fraction ")
        + cast(Job.max_failed_fraction, String)
        + literal("; the job was stopped, the rows done are kept")
    )
    return (
        update(Job)
        .where(
            Job.id == job_id,
            Job.status.in_(UNFINISHED),
            or_(and_(Job.upload_finished_at.is_not(None), not_(open_chunk)), over_limit),
        )
        .values(
            status=case(
                (over_limit, JobStatus.failed),
                (Job.error.is_(None), JobStatus.succeeded),
                else_=JobStatus.failed,
            ),
            error=case((over_limit, func.coalesce(Job.error, why)), else_=Job.error),
            finished_at=db_now(),
            updated_at=db_now(),
        )
    )


def close_open_chunks(job_id: str) -> Update:
    """A job that ended before all its rows were scored (failed early, expired) closes its
    open chunks: done, with nothing scored, so nothing is handed out or written after it is
    final and its counts never move again."""
    return (
        update(Chunk)
        .where(Chunk.job_id == job_id, Chunk.status != ChunkStatus.done)
        .values(status=ChunkStatus.done, lease_until=None, done_at=db_now())
    )


def try_complete(job_id: str, session: Session | None = None) -> bool:
    """Completes the job if it is done (or fails it past its failure limit); True if this call
    ended it. Its webhook event (core/webhooks.py) is written in the same transaction."""
    if session is not None:
        ended = bool(session.execute(completion(job_id)).rowcount)  # type: ignore[attr-defined]
        if ended:
            session.execute(close_open_chunks(job_id))
            webhooks.record(session, job_id)
        return ended
    with get_engine().begin() as conn:
        ended = bool(conn.execute(completion(job_id)).rowcount)  # type: ignore[attr-defined]
        if ended:
            webhooks.record(conn, job_id)
    if ended:
        with get_engine().begin() as conn:
            conn.execute(close_open_chunks(job_id))
    return ended


def expire(job_id: str) -> bool:
    """Ends a job past its deadline `expired`, in one transaction: the status first (it waits
    for the chunk completions in flight, which share-lock the row, and is the order they take
    the locks in), then its upload closed and its open chunks closed, and its webhook event
    (job.expired) written. The rows done are kept and downloadable. True if this call expired
    it."""
    with session_scope() as session:
        changed = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status.in_(UNFINISHED), Job.deadline_at < db_now())
            .values(status=JobStatus.expired, finished_at=db_now(), updated_at=db_now())
        ).rowcount  # type: ignore[attr-defined]
        if not changed:
            return False
        finish_upload(session, job_id)
        session.execute(close_open_chunks(job_id))
        job = get_job(session, job_id)
        done = job.scored_rows + job.failed_rows
        total = job.total_rows if job.total_rows is not None else job.received_rows
        deadline = "?"
        if job.deadline_at is not None:  # SQLite hands back naive UTC, PostgreSQL aware
            at = job.deadline_at
            at = at.astimezone(UTC) if at.tzinfo is not None else at
            deadline = at.strftime("%Y-%m-%d %H:%M:%SZ")
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.error.is_(None))
            .values(
                error=f"the deadline ({deadline}) passed with {done:,} of {total:,} rows done; "
                "the others were not scored"
            )
        )
        webhooks.record(session, job_id)
    return True


def get_job(session: Session, job_id: str, owner_key_id: int | None = None) -> Job:
    job = session.get(Job, job_id, populate_existing=True)
    if (
        job is None
        or job.deleted_at is not None
        or (owner_key_id is not None and job.owner_key_id != owner_key_id)
    ):
        raise JobNotFoundError(job_id)
    return job


def list_jobs(
    session: Session,
    *,
    limit: int,
    offset: int,
    owner_key_id: int | None = None,
    labels: list[tuple[str, str | None]] | None = None,
) -> tuple[list[Job], int]:
    """The newest jobs first; `labels` keeps those with every (key, value) pair given (a value
    of None: the key with any value)."""
    query = select(Job).where(Job.deleted_at.is_(None))
    count = select(func.count()).select_from(Job).where(Job.deleted_at.is_(None))
    conditions: list[Any] = []
    if owner_key_id is not None:
        conditions.append(Job.owner_key_id == owner_key_id)
    for key, value in labels or []:
        match = exists().where(JobLabel.job_id == Job.id, JobLabel.key == key)
        conditions.append(match.where(JobLabel.value == value) if value is not None else match)
    if conditions:
        query = query.where(*conditions)
        count = count.where(*conditions)
    jobs = session.execute(
        query.order_by(Job.created_at.desc(), Job.id).limit(limit).offset(offset)
    ).scalars()
    return list(jobs), session.execute(count).scalar_one()


def cancel_job(session: Session, job_id: str, owner_key_id: int | None = None) -> Job:
    """Cancelled is final at once: no chunk is handed out or written after this, and an upload
    still streaming stops at its next chunk."""
    get_job(session, job_id, owner_key_id)
    changed = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(UNFINISHED))
        .values(status=JobStatus.cancelled, finished_at=db_now(), updated_at=db_now())
    ).rowcount  # type: ignore[attr-defined]
    if changed:
        webhooks.record(session, job_id)
    job = get_job(session, job_id, owner_key_id)
    if not changed:
        raise JobStateError(
            f"job {job_id} is already {job.status}; only unfinished jobs can be cancelled"
        )
    return job


# Rows a delete removes per transaction: each batch holds the write lock (SQLite) or its row
# locks (PostgreSQL) for a fraction of a second, so other jobs' uploads and chunks go on.
DELETE_BATCH_ROWS = 20_000
# SQLite's busy handler naps up to 100 ms between its tries for the write lock: a pause longer
# than that after each batch lets a writer that is waiting (another upload) take the lock
# instead of losing it to the next batch every time.
SQLITE_BATCH_PAUSE_S = 0.12


def delete_job(job_id: str, owner_key_id: int | None = None) -> None:
    """Deletes a job with its rows, results and dedup-cache entries: first one short
    transaction marks it deleted (gone for every reader, and cancelled, so no chunk is
    claimed, written or added after it), then its rows go in batches of DELETE_BATCH_ROWS,
    each its own transaction. A delete cut short is finished by the sweeper (erase)."""
    mark_deleted(job_id, owner_key_id)
    erase(job_id)


def mark_deleted(job_id: str, owner_key_id: int | None = None) -> None:
    """The first step of delete_job, one short transaction: from its commit the job is gone
    for every reader; `erase` removes its rows."""
    with session_scope() as session:
        # The job's row first: a chunk's completion share-locks it too (chunks._mark_done), so
        # a delete and a completion wait for each other, and never deadlock.
        found = session.execute(
            select(Job.status, Job.owner_key_id)
            .where(Job.id == job_id, Job.deleted_at.is_(None))
            .with_for_update()
        ).one_or_none()
        if found is None or (owner_key_id is not None and found[1] != owner_key_id):
            raise JobNotFoundError(job_id)
        if found[0] is JobStatus.uploading:
            # The upload would go on storing rows of a job that is gone. A cancelled job can
            # go: its upload stops at the next chunk (see accepts_rows).
            raise JobStateError(
                f"job {job_id} is still uploading; cancel it first, or delete it once the "
                "upload has ended"
            )
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                status=JobStatus.cancelled,
                deleted_at=db_now(),
                finished_at=func.coalesce(Job.finished_at, db_now()),
                updated_at=db_now(),
            )
        )


def discard(job_id: str) -> None:
    """Removes a job whose request was refused after its rows were stored (or that lost the
    race for its Idempotency-Key): cancelled first (no chunk is handed out or written after
    that), then closed and deleted."""
    with session_scope() as session:
        try:
            cancel_job(session, job_id)
        except JobStateError:
            pass  # already final: its last chunk completed meanwhile
    with session_scope() as session:
        finish_upload(session, job_id)
    delete_job(job_id)


def erase(job_id: str) -> None:
    """Removes a job marked deleted, chunk by chunk in batches (each its own transaction, with
    a pause on SQLite for waiting writers), then its dedup-cache entries, then the job."""
    pause = SQLITE_BATCH_PAUSE_S if get_engine().dialect.name == "sqlite" else 0.0
    while _erase_rows(job_id) or _erase_cache(job_id):
        time.sleep(pause)
    with session_scope() as session:
        # What no chunk spans (none in practice), and the job. Children first: bulk deletes
        # do not rely on the backend's ON DELETE CASCADE.
        for table in (Result, InputRow, ChunkText, Chunk, JobPart, JobLabel, IdempotencyKey):
            session.execute(delete(table).where(table.job_id == job_id))
        webhooks.forget(session, job_id)
        session.execute(delete(Job).where(Job.id == job_id, Job.deleted_at.is_not(None)))


def _erase_rows(job_id: str) -> bool:
    """Deletes the next chunks of the job (by row number) up to DELETE_BATCH_ROWS rows, with
    their input rows, results and texts; False once no chunk is left."""
    with session_scope() as session:
        spans = session.execute(
            select(Chunk.seq, Chunk.first_row, Chunk.row_count)
            .where(Chunk.job_id == job_id)
            .order_by(Chunk.first_row)
            .limit(max(1, DELETE_BATCH_ROWS // 100))
        ).all()
        if not spans:
            return False
        batch: list[tuple[int, int, int]] = []
        rows = 0
        for seq, first_row, row_count in spans:
            if batch and rows + row_count > DELETE_BATCH_ROWS:
                break
            batch.append((seq, first_row, row_count))
            rows += row_count
        low, high = batch[0][1], max(first + count for _, first, count in batch)
        seqs = [seq for seq, _, _ in batch]
        # Chunks' row ranges never overlap, so [low, high) holds exactly these chunks' rows.
        for table in (Result, InputRow):
            session.execute(
                delete(table).where(
                    table.job_id == job_id, table.row_num >= low, table.row_num < high
                )
            )
        session.execute(
            delete(ChunkText).where(ChunkText.job_id == job_id, ChunkText.seq.in_(seqs))
        )
        session.execute(delete(Chunk).where(Chunk.job_id == job_id, Chunk.seq.in_(seqs)))
    return True


def _erase_cache(job_id: str) -> bool:
    """Deletes up to DELETE_BATCH_ROWS of the dedup-cache entries the job added; False once
    none is left."""
    batch = select(ScoreCache.key).where(ScoreCache.job_id == job_id).limit(DELETE_BATCH_ROWS)
    with session_scope() as session:
        gone = session.execute(delete(ScoreCache).where(ScoreCache.key.in_(batch)))
        return bool(gone.rowcount)  # type: ignore[attr-defined]
