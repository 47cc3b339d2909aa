"""Quotas per API key: rows queued (received and not yet scored) and jobs not finished, each
with a default in the settings and a per-key value (`reviewscore keys set-quota`).

They are checked when a request starts: a new job (upload, source_url, or a job in parts) needs
the key under both, a part needs it under its rows. A request let in is stored whole, so a key
can end past its row quota by one upload or part; nothing already accepted is refused or lost.
With auth off (development) every caller is anonymous and nothing is limited."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from reviewscore.core.errors import QuotaExceededError
from reviewscore.core.schema import FINAL_STATUSES, ApiKey, Chunk, ChunkStatus, Job
from reviewscore.core.settings import Settings


@dataclass(frozen=True)
class Usage:
    """A key's use and limits (None: no limit, with auth off)."""

    queued_rows: int
    unfinished_jobs: int
    max_queued_rows: int | None
    max_unfinished_jobs: int | None
    weight: float


def usage(session: Session, key_id: int | None, settings: Settings) -> Usage:
    owned = Job.owner_key_id.is_(None) if key_id is None else Job.owner_key_id == key_id
    unfinished = session.execute(
        select(func.count()).select_from(Job).where(owned, Job.status.not_in(FINAL_STATUSES))
    ).scalar_one()
    # A cancelled job's open chunks are never scored: they hold no place in the queue.
    queued = session.execute(
        select(func.coalesce(func.sum(Chunk.row_count), 0))
        .join(Job, Job.id == Chunk.job_id)
        .where(owned, Job.status.not_in(FINAL_STATUSES), Chunk.status != ChunkStatus.done)
    ).scalar_one()
    key = None if key_id is None else session.get(ApiKey, key_id)
    if key is None:
        return Usage(int(queued), int(unfinished), None, None, 1.0)
    return Usage(
        queued_rows=int(queued),
        unfinished_jobs=int(unfinished),
        max_queued_rows=_pick(key.max_queued_rows, settings.key_max_queued_rows),
        max_unfinished_jobs=_pick(key.max_unfinished_jobs, settings.key_max_unfinished_jobs),
        weight=key.weight or 1.0,
    )


def _pick(own: int | None, default: int) -> int:
    return default if own is None else own


def check_new_job(session: Session, key_id: int | None, settings: Settings) -> None:
    """Raises QuotaExceededError unless the key may start one more job."""
    if key_id is None:
        return
    used = usage(session, key_id, settings)
    limit = used.max_unfinished_jobs
    if limit is not None and used.unfinished_jobs >= limit:
        raise QuotaExceededError(
            f"quota of unfinished jobs reached: this key has {used.unfinished_jobs:,} jobs not "
            f"finished, its limit is {limit:,}; wait for one to finish (or cancel one), then "
            "try again (GET /v1/usage shows the key's use)",
            settings.quota_retry_after_s,
        )
    _check_rows(used, settings)


def check_more_rows(session: Session, key_id: int | None, settings: Settings) -> None:
    """Raises QuotaExceededError if the key's queued rows are at their quota (for a part)."""
    if key_id is not None:
        _check_rows(usage(session, key_id, settings), settings)


def _check_rows(used: Usage, settings: Settings) -> None:
    limit = used.max_queued_rows
    if limit is not None and used.queued_rows >= limit:
        raise QuotaExceededError(
            f"quota of queued rows reached: this key has {used.queued_rows:,} rows received "
            f"and not yet scored, its limit is {limit:,}; try again once some are scored "
            "(GET /v1/usage shows the key's use)",
            settings.quota_retry_after_s,
        )
