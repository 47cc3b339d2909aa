"""Results delivered to a URL: once a job with a `result_url` is finished, its results file (in
`result_format`, CSV by default) is PUT there, as to a presigned object-store URL, and retried
with backoff until it is taken or REVIEWSCORE_DELIVERY_MAX_ATTEMPTS are spent. The job shows
the outcome (delivered_at, or delivery_error and the attempts).

One owner decides who sends: `claim` moves the job's next-try time past a lease in one
conditional statement, so of two workers (or a worker and the sweeper's re-send) only one
sends at a time; a sender that dies lets its lease run out and the sweeper sends again. The
file is spooled first, because object stores want a Content-Length on a PUT."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import httpx
from sqlalchemy import and_, or_, select, update

from reviewscore.core.clock import db_now, db_now_plus
from reviewscore.core.db import session_scope
from reviewscore.core.exports import EXPORTS, ExportRequest
from reviewscore.core.schema import Job, JobStatus
from reviewscore.core.settings import Settings
from reviewscore.core.urls import check_url, shown

log = logging.getLogger(__name__)

# A sender holds a job this long; past it (the sender died) the sweeper sends again.
LEASE_S = 600.0
# An expired job delivers the rows it had done, as its download gives them.
DELIVERED = (JobStatus.succeeded, JobStatus.failed, JobStatus.expired)


def backoff_s(attempts: int) -> float:
    """Seconds before try `attempts + 1`: 5, 10, 20... capped at 10 minutes."""
    return float(min(600, 5 * 2 ** max(0, attempts - 1)))


def _due(max_attempts: int) -> object:
    return and_(
        Job.result_url.is_not(None),
        Job.status.in_(DELIVERED),
        Job.delivered_at.is_(None),
        Job.delivery_attempts < max_attempts,
        or_(Job.delivery_next_at.is_(None), Job.delivery_next_at <= db_now()),
    )


def due_jobs(max_attempts: int) -> list[str]:
    """Finished jobs whose results are still to be sent (first time, or a retry now due)."""
    with session_scope(readonly=True) as session:
        return list(session.execute(select(Job.id).where(_due(max_attempts))).scalars())  # type: ignore[arg-type]


def claim(job_id: str, max_attempts: int) -> bool:
    with session_scope() as session:
        return bool(
            session.execute(
                update(Job)
                .where(Job.id == job_id, _due(max_attempts))  # type: ignore[arg-type]
                .values(delivery_next_at=db_now_plus(LEASE_S))
            ).rowcount  # type: ignore[attr-defined]
        )


def _spool(job: Job, fmt: str, folder: Path) -> Path:
    export = EXPORTS[fmt]
    request = ExportRequest(job.id, job.keep_columns or [], guard=True)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        dir=folder, prefix=f"results-{job.id}-", suffix=f".{fmt}", delete=False
    ) as f:
        for piece in export.pieces(request):
            f.write(piece)
    return Path(f.name)


def deliver(
    job_id: str, settings: Settings, put: Callable[..., httpx.Response] | None = None
) -> bool:
    """Sends the job's results if they are due and this call wins the claim; True if sent."""
    if not claim(job_id, settings.delivery_max_attempts):
        return False
    with session_scope(readonly=True) as session:
        job = session.get(Job, job_id)
        if job is None or job.result_url is None:
            return False
        url, fmt = job.result_url, job.result_format or "csv"
        path = _spool(job, fmt, settings.var_dir / "spool")
    try:
        check_url(url, settings)
        with path.open("rb") as body:
            answer = (put or httpx.put)(
                url,
                content=body,
                headers={
                    "Content-Type": EXPORTS[fmt].media_type,
                    "Content-Length": str(path.stat().st_size),
                },
                timeout=httpx.Timeout(settings.delivery_timeout_s, connect=10.0),
                follow_redirects=False,
            )
        if not answer.is_success:
            raise DeliveryError(f"{shown(url)} answered {answer.status_code}")
    except Exception as exc:  # noqa: BLE001 - every failure is recorded and retried
        _failed(job_id, _reason(exc, url), settings.delivery_max_attempts)
        return False
    finally:
        path.unlink(missing_ok=True)
    with session_scope() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                delivered_at=db_now(),
                delivery_error=None,
                delivery_next_at=None,
                delivery_attempts=Job.delivery_attempts + 1,
            )
        )
    log.info("results of job %s delivered to %s", job_id, shown(url))
    return True


class DeliveryError(Exception):
    pass


def _reason(exc: Exception, url: str) -> str:
    if isinstance(exc, DeliveryError):
        return str(exc)
    message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
    # httpx puts the URL, query string included, in some messages: never keep a signature.
    return message.replace(url, shown(url))[:500]


def _failed(job_id: str, reason: str, max_attempts: int) -> None:
    with session_scope() as session:
        attempts = session.execute(
            select(Job.delivery_attempts).where(Job.id == job_id)
        ).scalar_one()
        attempts += 1
        last = attempts >= max_attempts
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                delivery_attempts=attempts,
                delivery_error=(
                    f"gave up after {attempts} attempts: {reason}"
                    if last
                    else f"attempt {attempts} failed: {reason}"
                ),
                delivery_next_at=None if last else db_now_plus(backoff_s(attempts)),
            )
        )
    log.warning("results of job %s not delivered (attempt %s): %s", job_id, attempts, reason)
