"""The chunk protocol: a job's rows are stored in chunks; a worker claims a chunk (one attempt,
a lease on the database's clock), scores it, renews the lease on a timer meanwhile, and
completes it: its results and the chunk's counts are written together, once.

A chunk can reach a worker more than once, in three ways:
1. Celery redelivers it (`task_acks_late`): the message is acknowledged only when the task
   returns, so a worker process that dies mid-chunk (`task_reject_on_worker_lost`) or a node
   whose Redis connection drops puts the message back, and another worker takes it.
2. The task retries itself (`self.retry(countdown=...)`) after scoring raised (the chunk was
   handed back first) or after the database could not be reached to claim it.
3. The sweeper sends it again: a running chunk whose lease ran out (its worker went silent:
   dead, hung or cut off) and a queued chunk whose message was lost (Redis lost it).
Each path is safe for the same two reasons: every claim counts an attempt in SQL (capped, so a
chunk that keeps failing ends with its rows failed instead of looping), and `complete_chunk`
writes only while the chunk is not done, in the transaction that marks it done, so a second
delivery can at worst score the chunk again; it never writes or counts a row twice.

No function here writes a job's row: claims, renewals and completions touch only their chunk,
so a host cut off mid-transaction holds up that one chunk, never other jobs. A completion only
share-locks its job's row (see _mark_done): other completions go on, a cancel or a delete of
that job waits for it (at most the idle-transaction timeout, for a host cut off).

`chunks.claimed_by` names the claiming process as "<Celery node name>:<pid>" (for example
"worker@host:4242"). Node names are unique among live workers, so a node that starts finds
chunks claimed under its name only from its own previous run (dead: a power loss, a SIGKILL)
and hands them back at once with `release_claims("worker@host:")`, instead of letting them wait
for their lease to run out. The attempt those claims counted stays counted.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    and_,
    delete,
    exists,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import InstrumentedAttribute, Session

from reviewscore.core import event_counts, fair_share
from reviewscore.core.chunk_texts import pack_texts, unpack_texts
from reviewscore.core.clock import db_now, db_now_plus
from reviewscore.core.db import (
    copy_rows,
    dialect_name,
    insert_ignoring_conflicts,
    session_scope,
    single_statement,
)
from reviewscore.core.ingest import ParsedRow, records
from reviewscore.core.ingest.labels import NEGATIVE, POSITIVE
from reviewscore.core.jobs import UNFINISHED, try_complete
from reviewscore.core.schema import (
    Chunk,
    ChunkStatus,
    ChunkText,
    InputRow,
    Job,
    Result,
)


@dataclass(frozen=True)
class ChunkRow:
    row_num: int
    text: str
    error: str | None


@dataclass(frozen=True)
class ChunkWork:
    """What a worker got by claiming a chunk: attempt `attempt` of it, and its rows."""

    job_id: str
    seq: int
    model_name: str
    model_version: str
    attempt: int
    rows: list[ChunkRow]
    # The chunk's rows as parsed from its stored records (core/ingest/records.py), whose input
    # side complete_chunk stores; None when ingest stored them (add_chunk).
    inputs: list[ParsedRow] | None = None


@dataclass(frozen=True)
class RowResult:
    row_num: int
    p_positive: float | None
    truncated: bool
    error: str | None


INPUT_COLUMNS = ("job_id", "row_num", "ext_id", "text", "error", "extra", "label", "words")
RESULT_COLUMNS = ("job_id", "row_num", "p_positive", "truncated", "error")


def _json_or_none(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def _words(row: ParsedRow) -> int | None:
    # Counted only for rows the evaluation can use (a label read as positive or negative).
    return len(row.text.split()) if row.label in (POSITIVE, NEGATIVE) else None


def add_chunk(session: Session, job_id: str, seq: int, rows: Sequence[ParsedRow]) -> None:
    """Stores one chunk's input rows (ids, errors, kept columns, labels), its texts as one blob
    and its chunk record; the caller commits, then enqueues."""
    session.execute(
        insert(ChunkText).values(job_id=job_id, seq=seq, data=pack_texts([r.text for r in rows]))
    )
    _store_inputs(session, job_id, rows)
    _add_chunk_record(session, job_id, seq, rows[0].row_num, len(rows))


def add_records(
    session: Session, job_id: str, seq: int, first_row: int, row_count: int, blob: bytes
) -> None:
    """Stores one chunk as its records, unparsed (core/ingest/records.py): one blob and the chunk
    record, no row of its own until the worker that scores it parses it (complete_chunk stores
    its input rows with its results). The caller commits, then enqueues."""
    session.execute(insert(ChunkText).values(job_id=job_id, seq=seq, data=blob))
    _add_chunk_record(session, job_id, seq, first_row, row_count)


def _add_chunk_record(
    session: Session, job_id: str, seq: int, first_row: int, row_count: int
) -> None:
    session.execute(
        insert(Chunk).values(
            job_id=job_id,
            seq=seq,
            first_row=first_row,
            row_count=row_count,
            status=ChunkStatus.queued,
            attempts=0,
            scored_rows=0,
            failed_rows=0,
        )
    )


def _store_inputs(session: Session, job_id: str, rows: Sequence[ParsedRow]) -> None:
    """The rows' input side (ids, errors, kept columns, labels); their texts are in the blob."""
    if dialect_name(session) == "postgresql":
        # COPY: measured 1.35x the rows/s of a multi-row INSERT for IMDB-sized reviews.
        copy_rows(
            session,
            "input_rows",
            INPUT_COLUMNS,
            (
                # COPY's text format takes a JSON column as its JSON text.
                (
                    job_id,
                    r.row_num,
                    r.ext_id,
                    "",
                    r.error,
                    _json_or_none(r.extra),
                    r.label,
                    _words(r),
                )
                for r in rows
            ),
        )
    else:
        session.execute(
            insert(InputRow),
            [
                {
                    "job_id": job_id,
                    "row_num": r.row_num,
                    "ext_id": r.ext_id,
                    "text": "",
                    "error": r.error,
                    "extra": r.extra,
                    "label": r.label,
                    "words": _words(r),
                }
                for r in rows
            ],
        )


def _still_open(job_id: str, seq: int) -> ColumnElement[bool]:
    """The chunk is not done and its job is not final (cancelled, expired, failed early) nor
    deleted: the condition of every claim and every completion, inside the one statement that
    acts on it."""
    return and_(
        Chunk.job_id == job_id,
        Chunk.seq == seq,
        Chunk.status != ChunkStatus.done,
        exists().where(Job.id == job_id, Job.status.in_(UNFINISHED)),
    )


def _before_deadline(job_id: str | InstrumentedAttribute[str]) -> ColumnElement[bool]:
    """The one "past deadline" rule: no chunk of a job is handed out once its deadline has
    passed (on the database's clock); a chunk already being scored may still be written until
    the sweeper ends the job `expired`."""
    return exists().where(
        Job.id == job_id, or_(Job.deadline_at.is_(None), Job.deadline_at > db_now())
    )


def _hands_out(job_id: InstrumentedAttribute[str]) -> ColumnElement[bool]:
    """The job of the chunk a fair claim takes still hands out chunks: not final (cancelled,
    expired, failed early, deleted) and not past its deadline. The same rule as claim_chunk's
    (_still_open and _before_deadline), for a chunk not named in advance."""
    return and_(
        exists().where(Job.id == job_id, Job.status.in_(UNFINISHED)), _before_deadline(job_id)
    )


def _claim_values(lease_s: float, worker: str, task: str | None) -> dict[str, Any]:
    return {
        "status": ChunkStatus.running,
        "attempts": Chunk.attempts + 1,
        "lease_until": db_now_plus(lease_s),
        "claimed_by": worker[:200],
        "claim_task": task[:64] if task else None,
    }


# What a claiming statement returns: job_id, seq, attempts, first_row, row_count, last_error.
Claimed: TypeAlias = "Row[str, int, int, int, int, str | None]"
CLAIMED = (
    Chunk.job_id,
    Chunk.seq,
    Chunk.attempts,
    Chunk.first_row,
    Chunk.row_count,
    Chunk.last_error,
)


def claim_chunk(
    job_id: str, seq: int, *, lease_s: float, max_attempts: int, worker: str
) -> ChunkWork | None:
    """Takes this chunk for one attempt, or returns None when there is nothing to do (done,
    its job final, deleted or past its deadline, or given up because its attempts ran out)."""
    with single_statement() as conn:
        claimed = conn.execute(
            update(Chunk)
            .where(_still_open(job_id, seq), _before_deadline(job_id))
            .values(_claim_values(lease_s, worker, None))
            .returning(*CLAIMED)
        ).one_or_none()
    if claimed is None:
        return None
    return _work(claimed, max_attempts)


def claim_next(
    task: str | None, *, lease_s: float, max_attempts: int, worker: str, chunk_rows: int
) -> ChunkWork | None:
    """Takes the next chunk in fair order (core/fair_share.py) for one attempt, whichever chunk
    the message that brought `task` named: a chunk message means "a chunk is queued", so the
    messages queued in Redis never decide the order. None when no chunk is queued.

    The same message delivered again (Celery redelivers it when the worker that had it was
    lost) takes back the chunk its first delivery claimed, as claim_chunk would for a message
    naming that chunk, rather than leave it to wait for its lease to run out."""
    claimed = _take_back(task, lease_s, worker) if task else None
    while True:
        if claimed is None:
            claimed = _take_fair(task, lease_s, worker, chunk_rows)
        if claimed is None:
            return None
        work = _work(claimed, max_attempts)
        if work is not None:
            return work
        claimed = None  # given up (its attempts ran out): the next chunk, then


def _take_back(task: str, lease_s: float, worker: str) -> Claimed | None:
    with single_statement() as conn:
        return conn.execute(
            update(Chunk)
            .where(
                Chunk.status == ChunkStatus.running,
                Chunk.claim_task == task[:64],
                _hands_out(Chunk.job_id),
            )
            .values(_claim_values(lease_s, worker, task))
            .returning(*CLAIMED)
        ).first()


def _take_fair(task: str | None, lease_s: float, worker: str, chunk_rows: int) -> Claimed | None:
    """The protocol's one condition holds inside the claiming statement (queued, so not done;
    its job still handing out chunks: _hands_out). On PostgreSQL, claims at once skip each other's chunks (SKIP
    LOCKED) instead of queueing on the same one (a chunk taken meanwhile fails the outer
    condition: the claim then tries the key's next job, then the next key); SQLite runs one
    writer at a time."""
    with single_statement() as conn:
        order = fair_share.order(conn, chunk_rows)
        for turn in order.turns:
            for job_id in turn.jobs:
                claimed = _take_first_queued(conn, job_id, lease_s, worker, task)
                if claimed is not None:
                    if len(order.turns) > 1:  # a key alone has no one to be fair to
                        fair_share.charge(conn, order, turn, claimed.row_count)
                    return claimed
    return None


def _take_first_queued(
    conn: Connection, job_id: str, lease_s: float, worker: str, task: str | None
) -> Claimed | None:
    """Claims the job's first queued chunk (not one handed back and still pausing)."""
    first = (
        select(Chunk.seq)
        .where(
            Chunk.job_id == job_id,
            Chunk.status == ChunkStatus.queued,
            Chunk.queued_at <= db_now(),
        )
        .order_by(Chunk.seq)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    return conn.execute(
        update(Chunk)
        .where(
            # One primary-key probe: a condition over the job's chunks would be a scan of them.
            Chunk.job_id == job_id,
            Chunk.seq == first,
            Chunk.status == ChunkStatus.queued,
            _hands_out(Chunk.job_id),
        )
        .values(_claim_values(lease_s, worker, task))
        .returning(*CLAIMED)
    ).first()


def _work(claimed: Claimed, max_attempts: int) -> ChunkWork | None:
    """The claimed chunk's rows, or None after giving it up (its attempts ran out)."""
    job_id, seq, attempt, first_row, row_count, last_error = claimed
    if attempt > max_attempts:
        give_up(
            job_id,
            seq,
            f"gave up after {max_attempts} attempts: {last_error or 'the worker was lost'}",
        )
        event_counts.count(event_counts.CHUNKS_GIVEN_UP)
        return None
    with single_statement() as conn:
        model_name, model_version = conn.execute(
            select(Job.model_name, Job.model_version).where(Job.id == job_id)
        ).one()
        rows, inputs = _rows(conn, job_id, first_row, row_count, seq)
    return ChunkWork(job_id, seq, model_name, model_version, attempt, rows, inputs)


def _rows(
    conn: Connection | Session, job_id: str, first_row: int, row_count: int, seq: int
) -> tuple[list[ChunkRow], list[ParsedRow] | None]:
    """The chunk's rows to score, and its parsed rows when they came from its stored records."""
    packed = conn.execute(
        select(ChunkText.data).where(ChunkText.job_id == job_id, ChunkText.seq == seq)
    ).scalar_one_or_none()
    if packed is not None and records.is_records(packed):
        parsed = _parsed(packed, first_row, row_count)
        return [ChunkRow(r.row_num, r.text, r.error) for r in parsed], parsed
    found = conn.execute(
        select(InputRow.row_num, InputRow.text, InputRow.error)
        .where(
            InputRow.job_id == job_id,
            InputRow.row_num >= first_row,
            InputRow.row_num < first_row + row_count,
        )
        .order_by(InputRow.row_num)
    ).all()
    if packed is None:  # stored before chunk_texts existed, or already dropped
        return [ChunkRow(row_num, text, error) for row_num, text, error in found], None
    texts = unpack_texts(packed)
    return [
        ChunkRow(row_num, text, error)
        for (row_num, _, error), text in zip(found, texts, strict=True)
    ], None


def _parsed(blob: bytes, first_row: int, row_count: int) -> list[ParsedRow]:
    """The chunk's stored records as rows. The API read each of them as this parse does, so it
    cannot fail but by a defect; if it does, its rows fail with the reason rather than the
    chunk retrying until its attempts run out (and still failing)."""
    try:
        return records.parse(blob, first_row)
    except Exception as exc:  # noqa: BLE001 - see above
        error = f"the stored records could not be read: {type(exc).__name__}: {exc}"[:2000]
        return [ParsedRow(first_row + i, None, "", error) for i in range(row_count)]


def _drop_texts(
    session: Session, job_id: str, seq: int, parsed: Sequence[ParsedRow] | None = None
) -> None:
    """A done chunk's texts are never read again (its results are final): dropped unless the
    job keeps them. A chunk parsed from its records first stores its rows' input side, and a
    job that keeps texts keeps them packed (core/chunk_texts.py) rather than as records."""
    keeps = exists().where(Job.id == job_id, Job.keep_texts.is_(True))
    if parsed is not None:
        _store_inputs(session, job_id, parsed)
        # Asked first: packing a chunk's texts is zstd over all of them, wasted on the jobs
        # (nearly all) whose texts are dropped.
        if session.scalar(select(keeps)):
            session.execute(
                update(ChunkText)
                .where(ChunkText.job_id == job_id, ChunkText.seq == seq)
                .values(data=pack_texts([r.text for r in parsed]))
            )
            return
    session.execute(
        delete(ChunkText).where(ChunkText.job_id == job_id, ChunkText.seq == seq, ~keeps)
    )


def _mark_done(
    session: Session, job_id: str, seq: int, scored: int, failed: int
) -> tuple[int, int] | None:
    """The fence every write goes through: the chunk turns done once, with its counts; None if
    it was done already (or its job cancelled or deleted). Taking the chunk's row lock first
    makes a concurrent second completion wait here and then find the chunk done.

    The job's row is share-locked first, until the caller commits: completions of a job's
    chunks never wait for each other, but a cancel (which writes the job's row) waits for the
    completions in flight, and one after it finds the job cancelled. Without it a cancel could
    commit between this check and the commit, and `scored` moved after the cancel returned."""
    session.execute(select(Job.id).where(Job.id == job_id).with_for_update(read=True))
    return session.execute(
        update(Chunk)
        .where(_still_open(job_id, seq))
        .values(
            status=ChunkStatus.done,
            lease_until=None,
            done_at=db_now(),
            scored_rows=scored,
            failed_rows=failed,
        )
        .returning(Chunk.first_row, Chunk.row_count)
    ).one_or_none()  # type: ignore[return-value]


def complete_chunk(session: Session, work: ChunkWork, results: Sequence[RowResult]) -> bool:
    """Writes a chunk's results with its counts in the caller's transaction; False (and no
    write) if the chunk was done already. Afterwards, the caller commits, then `try_complete`s."""
    failed = sum(1 for r in results if r.error is not None)
    if _mark_done(session, work.job_id, work.seq, len(results) - failed, failed) is None:
        return False
    _drop_texts(session, work.job_id, work.seq, work.inputs)
    rows = [(work.job_id, r.row_num, r.p_positive, r.truncated, r.error) for r in results]
    if dialect_name(session) == "postgresql":
        # COPY, with no conflict clause: the fence above lets one transaction per chunk past,
        # so no result of this chunk can exist yet (one that did would fail the transaction,
        # never be written twice). Measured 7x the rows/s of one INSERT per row.
        copy_rows(session, "results", RESULT_COLUMNS, rows)
    else:
        insert_ignoring_conflicts(
            session, Result, [dict(zip(RESULT_COLUMNS, row, strict=True)) for row in rows]
        )
    return True


def give_up(job_id: str, seq: int, reason: str) -> None:
    """Ends a chunk whose attempts ran out: each of its rows fails with `reason` (or the error
    ingest already gave it), so the job can still finish."""
    with session_scope() as session:
        job = session.execute(select(Job.id).where(Job.id == job_id)).scalar_one_or_none()
        span = session.execute(
            select(Chunk.first_row, Chunk.row_count).where(Chunk.job_id == job_id, Chunk.seq == seq)
        ).one_or_none()
        if job is None or span is None:
            return
        rows, inputs = _rows(session, job_id, *span, seq)
        if _mark_done(session, job_id, seq, 0, len(rows)) is None:
            return
        _drop_texts(session, job_id, seq, inputs)
        insert_ignoring_conflicts(
            session,
            Result,
            [
                {
                    "job_id": job_id,
                    "row_num": r.row_num,
                    "p_positive": None,
                    "truncated": False,
                    "error": r.error or reason[:2000],
                }
                for r in rows
            ],
        )
    try_complete(job_id)


def renew_lease(work: ChunkWork, lease_s: float) -> bool:
    """Extends the lease while the chunk is scored; False once this attempt no longer holds
    the chunk (another claim took it, it was done, or its job was cancelled): stop then."""
    with single_statement() as conn:
        renewed = conn.execute(
            update(Chunk)
            .where(
                _still_open(work.job_id, work.seq),
                Chunk.status == ChunkStatus.running,
                Chunk.attempts == work.attempt,
            )
            .values(lease_until=db_now_plus(lease_s))
        )
    return bool(renewed.rowcount)


def release_claims(prefix: str) -> list[tuple[str, int]]:
    """Hands back every running chunk whose `claimed_by` starts with `prefix` (a node's name and
    a colon: its previous run's claims) and returns them for the caller to send again."""
    with single_statement() as conn:
        released = conn.execute(
            update(Chunk)
            .where(
                Chunk.status == ChunkStatus.running,
                Chunk.claimed_by.startswith(prefix, autoescape=True),
            )
            .values(status=ChunkStatus.queued, lease_until=None, queued_at=db_now())
            .returning(Chunk.job_id, Chunk.seq)
        ).all()
    return [(job_id, seq) for job_id, seq in released]


def hand_back(work: ChunkWork, error: str, retry_in_s: float = 0.0) -> None:
    """Returns a chunk to the queue after a failed attempt (unless another attempt took it
    meanwhile); the caller sends it again. Fair claims leave it alone for `retry_in_s` (its
    queued_at is set that far ahead), so its next attempt comes after a pause, not at once
    through another chunk's message."""
    with single_statement() as conn:
        conn.execute(
            update(Chunk)
            .where(
                Chunk.job_id == work.job_id,
                Chunk.seq == work.seq,
                Chunk.status == ChunkStatus.running,
                Chunk.attempts == work.attempt,
            )
            .values(
                status=ChunkStatus.queued,
                lease_until=None,
                queued_at=db_now_plus(retry_in_s),
                last_error=error[:2000],
            )
        )
