"""The sweeper, run by beat every REVIEWSCORE_SWEEP_INTERVAL_S: hands lost work back, closes
stalled uploads, ends jobs past their deadline `expired`, completes jobs whose completion was
missed, and purges old jobs.

Every judgement of time uses the database's clock. Each step runs on its own, takes only rows
no one else holds (SKIP LOCKED on PostgreSQL), and each job is handled in its own transaction:
a host stuck mid-transaction or one job that cannot be handled never stops a sweep.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import and_, exists, func, not_, or_, select, tuple_, update

from reviewscore.core import delivery, jobs, parts
from reviewscore.core.clock import db_now, db_now_plus
from reviewscore.core.db import session_scope, single_statement
from reviewscore.core.schema import Chunk, ChunkStatus, Job, JobPart, JobStatus, PartState
from reviewscore.core.settings import Settings

log = logging.getLogger(__name__)
ChunkKey = tuple[str, int]


@dataclass
class SweepReport:
    expired: list[ChunkKey] = field(default_factory=list)
    lost: list[ChunkKey] = field(default_factory=list)
    stalled: list[str] = field(default_factory=list)
    past_deadline: list[str] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)
    purged: list[str] = field(default_factory=list)
    delivering: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {
            name: len(getattr(self, name))
            for name in (
                "expired",
                "lost",
                "stalled",
                "past_deadline",
                "completed",
                "delivering",
                "purged",
                "errors",
            )
        }


def _requeue(condition: object) -> list[ChunkKey]:
    """Sets matching chunks back to queued (stamping queued_at) and returns them."""
    free = (
        select(Chunk.job_id, Chunk.seq)
        .where(condition)  # type: ignore[arg-type]
        .with_for_update(skip_locked=True)
    )
    with single_statement() as conn:
        found = conn.execute(
            update(Chunk)
            .where(tuple_(Chunk.job_id, Chunk.seq).in_(free))
            .values(status=ChunkStatus.queued, lease_until=None, queued_at=db_now())
            .returning(Chunk.job_id, Chunk.seq)
        ).all()
    return [(job_id, seq) for job_id, seq in found]


def requeue_expired_leases() -> list[ChunkKey]:
    """Running chunks whose worker stopped renewing its lease: dead, hung or cut off."""
    return _requeue(and_(Chunk.status == ChunkStatus.running, Chunk.lease_until < db_now()))


def requeue_lost_messages(grace_s: float) -> list[ChunkKey]:
    """Queued chunks untouched for `grace_s` while the queue is empty: their message was lost."""
    return _requeue(
        and_(
            Chunk.status == ChunkStatus.queued,
            Chunk.queued_at < db_now_plus(-grace_s),
            exists().where(Job.id == Chunk.job_id, Job.status.in_(jobs.UNFINISHED)),
        )
    )


def stalled_uploads(stall_s: float) -> list[str]:
    """Uploads whose bytes stopped arriving `stall_s` ago (the request beats while they arrive:
    core/uploads.py), and with no new chunk since: their connection (or their API) is gone. A
    slow client still sending is never among them. A job cancelled during its upload is among
    them until its upload is closed too."""
    recent_chunk = exists().where(Chunk.job_id == Job.id, Chunk.created_at >= db_now_plus(-stall_s))
    seen = func.coalesce(Job.upload_seen_at, Job.created_at)
    with session_scope(readonly=True) as session:
        return list(
            session.execute(
                select(Job.id).where(
                    Job.upload_finished_at.is_(None),
                    # A job in parts is open until `complete`, between parts too: its idle
                    # end is parts.idle_parts_jobs's (REVIEWSCORE_PARTS_UPLOAD_TTL_S).
                    or_(
                        Job.status == JobStatus.cancelled,
                        and_(Job.status == JobStatus.uploading, Job.part_options.is_(None)),
                    ),
                    Job.created_at < db_now_plus(-stall_s),
                    Job.deleted_at.is_(None),
                    seen < db_now_plus(-stall_s),
                    not_(recent_chunk),
                )
            ).scalars()
        )


def close_stalled_upload(job_id: str) -> None:
    with session_scope() as session:
        received = jobs.get_job(session, job_id).received_rows
        jobs.finish_upload(
            session,
            job_id,
            error=(
                f"{jobs.UPLOAD_INTERRUPTED}: no data arrived for a while; the {received:,} rows "
                "received before the cut were kept and scored"
            ),
        )
    jobs.try_complete(job_id)


def close_idle_parts_upload(job_id: str, ttl_s: float) -> None:
    """A job in parts that nothing was sent to for `ttl_s` and never completed: parts left
    half-stored by a request that died are dropped, and the job ends failed once the parts
    it stored are scored."""
    with session_scope(readonly=True) as session:
        storing = session.execute(
            select(JobPart.number, JobPart.token).where(
                JobPart.job_id == job_id, JobPart.state == PartState.storing
            )
        ).all()
    for number, token in storing:
        parts.drop(job_id, number, token)
    with session_scope() as session:
        received = jobs.get_job(session, job_id).received_rows
        jobs.finish_upload(
            session,
            job_id,
            error=(
                f"{jobs.UPLOAD_INTERRUPTED}: the upload in parts was not completed (POST "
                f"/v1/jobs/{{id}}/complete) within {ttl_s:,.0f} s of its last part "
                f"(REVIEWSCORE_PARTS_UPLOAD_TTL_S); the {received:,} rows of its stored parts "
                "were kept and scored"
            ),
        )
    jobs.try_complete(job_id)


def uncompleted_jobs() -> list[str]:
    """Jobs with every chunk done whose completion statement never ran (its worker died
    between its commit and that statement, say)."""
    open_chunk = exists().where(Chunk.job_id == Job.id, Chunk.status != ChunkStatus.done)
    with session_scope(readonly=True) as session:
        return list(
            session.execute(
                select(Job.id).where(
                    Job.status.in_(jobs.UNFINISHED),
                    Job.upload_finished_at.is_not(None),
                    not_(open_chunk),
                )
            ).scalars()
        )


def deadline_passed_jobs() -> list[str]:
    """Unfinished jobs whose deadline has passed: no chunk of theirs is handed out any more
    (chunks.claim_chunk), and they end `expired` (jobs.expire)."""
    with session_scope(readonly=True) as session:
        return list(
            session.execute(
                select(Job.id).where(
                    Job.status.in_(jobs.UNFINISHED),
                    Job.deadline_at < db_now(),
                    Job.deleted_at.is_(None),
                )
            ).scalars()
        )


# A delete still under way is left to its request this long; past it (its API process died
# mid-way) the sweeper finishes it.
DELETE_GRACE_S = 600.0


def expired_jobs(retention_days: float) -> list[str]:
    """Finished jobs past their retention (their own results_expire_after, never beyond the
    service's, else REVIEWSCORE_JOB_RETENTION_DAYS), and deletes left half-done."""
    kept_s = func.coalesce(Job.retention_s, retention_days * 86400)
    with session_scope(readonly=True) as session:
        return list(
            session.execute(
                select(Job.id).where(
                    or_(
                        and_(
                            Job.deleted_at.is_(None),
                            Job.finished_at.is_not(None),
                            Job.finished_at < db_now_plus(-kept_s),
                        ),
                        Job.deleted_at < db_now_plus(-DELETE_GRACE_S),
                    )
                )
            ).scalars()
        )


def expire_job(job_id: str) -> None:
    if jobs.expire(job_id):
        log.info("job %s expired: its deadline passed", job_id)


def purge_job(job_id: str) -> None:
    with session_scope(readonly=True) as session:
        deleting = session.execute(
            select(Job.deleted_at.is_not(None)).where(Job.id == job_id)
        ).scalar_one_or_none()
    if deleting:
        jobs.erase(job_id)
    elif deleting is not None:
        jobs.delete_job(job_id)


def _each(
    report: SweepReport, step: str, ids: list[str], action: Callable[[str], None]
) -> list[str]:
    """Runs `action` on each job in its own transaction; a failure is logged and skipped."""
    handled = []
    for job_id in ids:
        try:
            action(job_id)
            handled.append(job_id)
        except Exception as exc:  # noqa: BLE001 - one bad job must not stop the sweep
            log.warning("sweep: %s of job %s failed: %s", step, job_id, exc)
            report.errors.append(f"{step} {job_id}: {type(exc).__name__}")
    return handled


def _step(report: SweepReport, step: str, action: Callable[[], None]) -> None:
    try:
        action()
    except Exception as exc:  # noqa: BLE001 - the other steps still run
        log.warning("sweep: %s failed: %s", step, exc)
        report.errors.append(f"{step}: {type(exc).__name__}")


def sweep(
    settings: Settings,
    *,
    queue_is_empty: Callable[[], bool],
    enqueue: Callable[[str, int], None],
    deliver: Callable[[str], None] | None = None,
    send_webhooks: Callable[[], None] | None = None,
) -> SweepReport:
    report = SweepReport()

    def expired() -> None:
        report.expired = requeue_expired_leases()

    def lost() -> None:
        # A queued chunk's message can only be lost if nothing is waiting in the queue any more.
        if queue_is_empty():
            report.lost = requeue_lost_messages(settings.queued_grace_s)

    def stalled() -> None:
        ids = stalled_uploads(settings.upload_stall_s)
        report.stalled = _each(report, "closing the stalled upload", ids, close_stalled_upload)

    def idle_parts() -> None:
        ttl = settings.parts_upload_ttl_s
        ids = parts.idle_parts_jobs(ttl)
        report.stalled += _each(
            report,
            "closing the idle upload in parts",
            ids,
            lambda j: close_idle_parts_upload(j, ttl),
        )

    def past_deadline() -> None:
        ids = deadline_passed_jobs()
        report.past_deadline = _each(report, "expiring the job", ids, expire_job)

    def completed() -> None:
        ids = [job_id for job_id in uncompleted_jobs() if jobs.try_complete(job_id)]
        report.completed = ids

    def delivering() -> None:
        # Finished jobs whose results are still to be PUT (a first try missed, a retry due).
        if deliver is not None:
            report.delivering = delivery.due_jobs(settings.delivery_max_attempts)

    def webhooks_due() -> None:
        # Completion events still to be POSTed (a first try missed, a retry due); sent off
        # the sweep's own path, so a hanging receiver never holds it.
        if send_webhooks is not None:
            send_webhooks()

    def purged() -> None:
        ids = expired_jobs(settings.job_retention_days)
        report.purged = _each(report, "purging", ids, purge_job)

    for name, action in (
        ("re-queueing expired leases", expired),
        ("re-queueing lost messages", lost),
        ("closing stalled uploads", stalled),
        ("closing idle uploads in parts", idle_parts),
        ("expiring jobs past their deadline", past_deadline),
        ("completing finished jobs", completed),
        ("delivering results", delivering),
        ("sending webhooks", webhooks_due),
        ("purging old jobs", purged),
    ):
        _step(report, name, action)
    for job_id in report.delivering:
        try:
            deliver(job_id)  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - still due: the next sweep sends it again
            log.warning("sweep: could not send the delivery of job %s: %s", job_id, exc)
    for job_id, seq in report.expired + report.lost:
        try:
            enqueue(job_id, seq)
        except Exception as exc:  # noqa: BLE001 - left queued: the next sweep sends it again
            log.warning("sweep: could not send chunk %s/%s: %s", job_id, seq, exc)
    return report
