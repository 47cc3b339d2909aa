"""Uploads in parts: a job's numbered parts (1..MAX_PARTS), each claimed by the request that
stores it, then stored with its sha256 and rows, and `complete` closing the upload once parts
1..N are all there. Parts may arrive in any order, at once, at any API process: every state
change here is one statement whose condition decides it, so two requests never both win.

A part's rows and chunks take fixed ranges (PART_STRIDE apart), so parts stored in any order
keep the input order, part by part then row by row; default ids are the rows' ordinals in that
order, final once the upload is complete (`ordinal_offsets`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from reviewscore.core import jobs
from reviewscore.core.clock import db_now, db_now_plus
from reviewscore.core.db import session_scope
from reviewscore.core.errors import JobStateError, ReviewscoreError
from reviewscore.core.schema import (
    Chunk,
    ChunkText,
    InputRow,
    Job,
    JobPart,
    JobStatus,
    PartState,
    Result,
)

MAX_PARTS = 10_000
# Rows (and chunk numbers) of part n are (n - 1) * PART_STRIDE + 1 ... : 10,000 parts of up to
# 199,999 rows each fit the 32-bit row numbers of every backend.
PART_STRIDE = 200_000
MAX_PART_ROWS = PART_STRIDE - 1


class PartConflictError(JobStateError):
    """The part is stored with other bytes, or another request is storing it now."""


class PartsMissingError(JobStateError):
    """`complete` was called before every part it names was stored."""


@dataclass(frozen=True)
class PartView:
    number: int
    state: PartState
    rows: int
    sha256: str | None
    size_bytes: int | None


def first_row(number: int) -> int:
    """The row number just before part `number`'s first row (its rows are this + 1, + 2...)."""
    return (number - 1) * PART_STRIDE


def first_seq(number: int) -> int:
    return (number - 1) * PART_STRIDE


def check_number(number: int) -> None:
    if not 1 <= number <= MAX_PARTS:
        raise ReviewscoreError(f"part numbers run from 1 to {MAX_PARTS:,}; got {number}")


def parts_job(session: Session, job_id: str, owner_key_id: int | None) -> Job:
    """The job, if it takes parts now: uploaded in parts, not completed, not cancelled."""
    job = jobs.get_job(session, job_id, owner_key_id)
    if job.part_options is None:
        raise JobStateError(
            f"job {job_id} was not created for parts (POST /v1/jobs?parts=true creates one)"
        )
    if job.finished:
        raise JobStateError(f"job {job_id} is {job.status}; it takes no more parts")
    if job.upload_finished_at is not None:
        raise JobStateError(
            f"the upload of job {job_id} is complete ({job.parts_total} parts); it takes no "
            "more parts"
        )
    return job


def get_part(session: Session, job_id: str, number: int) -> JobPart | None:
    return session.get(JobPart, (job_id, number), populate_existing=True)


def claim(job_id: str, number: int, stale_s: float) -> str:
    """Takes part `number` for this request and returns its token. A `storing` part whose
    request went silent for `stale_s` (its API died mid-part) is dropped and taken over."""
    token = uuid.uuid4().hex
    with session_scope() as session:
        stale = session.execute(
            select(JobPart.token).where(
                JobPart.job_id == job_id,
                JobPart.number == number,
                JobPart.state == PartState.storing,
                JobPart.updated_at < db_now_plus(-stale_s),
            )
        ).scalar_one_or_none()
    if stale is not None:
        drop(job_id, number, stale)
    try:
        with session_scope() as session:
            session.execute(
                insert(JobPart).values(
                    job_id=job_id,
                    number=number,
                    state=PartState.storing,
                    token=token,
                    rows=0,
                    updated_at=db_now(),
                )
            )
    except IntegrityError:
        raise PartConflictError(
            f"part {number} of job {job_id} is being stored by another request; send it "
            "again once that one has ended"
        ) from None
    return token


def heartbeat(job_id: str, number: int, token: str) -> None:
    with session_scope() as session:
        session.execute(
            update(JobPart)
            .where(JobPart.job_id == job_id, JobPart.number == number, JobPart.token == token)
            .values(updated_at=db_now())
        )


def mark_stored(
    session: Session, job_id: str, number: int, token: str, *, sha256: str, size: int, rows: int
) -> bool:
    """The part is stored (in the caller's transaction); False if this request lost it."""
    return bool(
        session.execute(
            update(JobPart)
            .where(
                JobPart.job_id == job_id,
                JobPart.number == number,
                JobPart.token == token,
                JobPart.state == PartState.storing,
            )
            .values(state=PartState.stored, sha256=sha256, size_bytes=size, rows=rows)
        ).rowcount  # type: ignore[attr-defined]
    )


def drop(job_id: str, number: int, token: str) -> None:
    """Removes a part that was refused or cut short, with every row and result of it, so the
    job is as it was before the part: its counts (summed from chunks) included."""
    lo, hi = first_row(number), first_row(number) + PART_STRIDE
    seq_lo = first_seq(number)
    with session_scope() as session:
        owned = session.execute(
            select(JobPart.number).where(
                JobPart.job_id == job_id, JobPart.number == number, JobPart.token == token
            )
        ).first()
        if owned is None:
            return
        # Chunks first: deleting them waits for (and then fences off) a worker completing one,
        # so no result of the part can be written after its results are deleted.
        session.execute(
            delete(Chunk).where(
                Chunk.job_id == job_id, Chunk.seq >= seq_lo, Chunk.seq < seq_lo + PART_STRIDE
            )
        )
        session.execute(
            delete(ChunkText).where(
                ChunkText.job_id == job_id,
                ChunkText.seq >= seq_lo,
                ChunkText.seq < seq_lo + PART_STRIDE,
            )
        )
        in_part = and_(Result.row_num > lo, Result.row_num <= hi)
        session.execute(delete(Result).where(Result.job_id == job_id, in_part))
        session.execute(
            delete(InputRow).where(
                InputRow.job_id == job_id, InputRow.row_num > lo, InputRow.row_num <= hi
            )
        )
        session.execute(
            delete(JobPart).where(
                JobPart.job_id == job_id, JobPart.number == number, JobPart.token == token
            )
        )


def stored_rows_elsewhere(session: Session, job_id: str, number: int) -> int:
    return session.execute(
        select(func.coalesce(func.sum(JobPart.rows), 0)).where(
            JobPart.job_id == job_id, JobPart.number != number
        )
    ).scalar_one()


def list_parts(session: Session, job_id: str) -> list[PartView]:
    found = session.execute(
        select(JobPart).where(JobPart.job_id == job_id).order_by(JobPart.number)
    ).scalars()
    return [PartView(p.number, p.state, p.rows, p.sha256, p.size_bytes) for p in found]


def complete(session: Session, job_id: str, parts: int, owner_key_id: int | None) -> None:
    """Closes the upload once parts 1..`parts` are all stored and no other part is; calling it
    again with the same count is answered as done."""
    job = jobs.get_job(session, job_id, owner_key_id)
    if job.part_options is None:
        raise JobStateError(f"job {job_id} was not created for parts")
    if job.upload_finished_at is not None:
        if job.parts_total == parts:
            return
        raise JobStateError(
            f"the upload of job {job_id} is already complete with {job.parts_total} parts"
        )
    if not 1 <= parts <= MAX_PARTS:
        raise ReviewscoreError(f"parts must be from 1 to {MAX_PARTS:,}; got {parts}")
    stored = {p.number: p.state for p in list_parts(session, job_id)}
    missing = [n for n in range(1, parts + 1) if stored.get(n) != PartState.stored]
    if missing:
        raise PartsMissingError(
            f"job {job_id} cannot be completed with {parts} parts: "
            f"{_numbers(missing)} {'is' if len(missing) == 1 else 'are'} not stored yet"
        )
    beyond = sorted(n for n in stored if n > parts)
    if beyond:
        raise PartsMissingError(
            f"job {job_id} holds parts past {parts}: {_numbers(beyond)}; complete it with "
            f"{max(beyond)} parts, or leave those out"
        )
    session.execute(update(Job).where(Job.id == job_id).values(parts_total=parts))
    jobs.finish_upload(session, job_id)


def _numbers(numbers: list[int], show: int = 20) -> str:
    listed = ", ".join(str(n) for n in numbers[:show])
    more = f" and {len(numbers) - show:,} more" if len(numbers) > show else ""
    return f"part{'s' if len(numbers) > 1 else ''} {listed}{more}"


def ordinal_offsets(session: Session, job_id: str) -> dict[int, int] | None:
    """For a job in parts, the ordinal of the row before each stored part's first (parts in
    order), so a row's default id is its place in the input; None for other jobs."""
    is_parts = session.execute(
        select(Job.part_options.is_not(None)).where(Job.id == job_id)
    ).scalar_one_or_none()
    if not is_parts:
        return None
    offsets, total = {}, 0
    for number, rows in session.execute(
        select(JobPart.number, JobPart.rows)
        .where(JobPart.job_id == job_id, JobPart.state == PartState.stored)
        .order_by(JobPart.number)
    ):
        offsets[number] = total
        total += rows
    return offsets


def default_id(row_num: int, offsets: dict[int, int] | None) -> str:
    if offsets is None:
        return str(row_num)
    number = (row_num - 1) // PART_STRIDE + 1
    return str(offsets.get(number, 0) + row_num - first_row(number))


def idle_parts_jobs(ttl_s: float) -> list[str]:
    """Jobs in parts never completed and untouched (no part claimed or stored) for `ttl_s`."""
    recent = (
        select(JobPart.job_id)
        .where(JobPart.job_id == Job.id, JobPart.updated_at >= db_now_plus(-ttl_s))
        .exists()
    )
    with session_scope(readonly=True) as session:
        return list(
            session.execute(
                select(Job.id).where(
                    Job.part_options.is_not(None),
                    Job.upload_finished_at.is_(None),
                    Job.status == JobStatus.uploading,
                    Job.created_at < db_now_plus(-ttl_s),
                    ~recent,
                )
            ).scalars()
        )


def options_of(job: Job) -> dict[str, Any]:
    return dict(job.part_options or {})
