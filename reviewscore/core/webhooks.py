"""Completion webhooks, as the Standard Webhooks specification has them: once a job with a
callback_url is final, an event (job.succeeded, job.failed, job.cancelled, job.expired) whose
`data` is the job as GET /v1/jobs/{id} shows it is POSTed there, signed with the job's key's
secret (REVIEWSCORE_WEBHOOK_SECRET for jobs without a key).

The event is an outbox row written in the transaction that makes the job final (`record`), so
no restart loses it. Any host sends due events (`send_due`: the sweeper, and `send_soon` right
after a job ends); `claim` pushes the event's next time past a lease in one conditional
statement, so one sender at a time holds it, and a sender that dies lets the lease run out.
Every attempt carries the same webhook-id and body, so receivers can drop repeats; failures
are retried with exponential backoff for REVIEWSCORE_WEBHOOK_RETRY_FOR_S, each attempt kept
in webhook_deliveries (GET /v1/jobs/{id}/deliveries). Sending runs in background threads,
never inside a chunk's task."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import Connection, case, delete, exists, insert, literal, null, select, update
from sqlalchemy.orm import Session

from reviewscore.core import event_counts, job_view
from reviewscore.core.clock import db_now, db_now_plus
from reviewscore.core.db import session_scope
from reviewscore.core.errors import BadRequestError
from reviewscore.core.schema import (
    FINAL_STATUSES,
    ApiKey,
    Job,
    JobStatus,
    WebhookDelivery,
    WebhookEvent,
)
from reviewscore.core.settings import Settings, get_settings
from reviewscore.core.urls import check_url, shown

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
# The event of each final status; "expired" only once JobStatus has it.
_EVENT_OF = {
    "succeeded": "job.succeeded",
    "failed": "job.failed",
    "cancelled": "job.cancelled",
    "expired": "job.expired",
}
EVENT_TYPES = {JobStatus(s): name for s, name in _EVENT_OF.items() if s in JobStatus.__members__}
# Events sent at once by one sweep: a receiver that hangs holds one sender, not the others.
SENDERS = 8


def new_secret() -> str:
    """A signing secret as Standard Webhooks writes one: whsec_ and 32 random bytes, base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _secret_bytes(secret: str) -> bytes:
    try:
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error:
        raise BadRequestError(
            "the webhook secret is not whsec_ followed by base64 (REVIEWSCORE_WEBHOOK_SECRET: "
            "make one with `python -c 'from reviewscore.core.webhooks import new_secret; "
            "print(new_secret())'`)"
        ) from None


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The webhook-signature header: v1, then base64 of HMAC-SHA256 over id.timestamp.body."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(_secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, message_id, timestamp, body),
    }


# ---- at submission ----------------------------------------------------------------------------


def callback_for(
    session: Session, url: str | None, owner_key_id: int | None, settings: Settings
) -> str | None:
    """The callback_url a new job gets (the one sent, else its key's default), checked as every
    URL is; refused (422) when there is no secret to sign its events with."""
    key = session.get(ApiKey, owner_key_id) if owner_key_id is not None else None
    url = url or (key.callback_url if key is not None else None)
    if not url:
        return None
    check_url(url, settings)
    if key is not None and not key.webhook_secret:
        raise BadRequestError(
            f"callback_url needs a signing secret, and key {key.id} has none (it was made "
            "before webhooks): create a new key with `reviewscore keys create`"
        )
    if key is None:
        if not settings.webhook_secret:
            raise BadRequestError(
                "callback_url needs a signing secret: set REVIEWSCORE_WEBHOOK_SECRET (whsec_...) "
                "or send the job with an API key"
            )
        _secret_bytes(settings.webhook_secret)
    return url


# ---- the outbox ------------------------------------------------------------------------------


def record(session: Session | Connection, job_id: str) -> None:
    """The job's event, if it is final, has a callback_url and has no event yet; run in the
    transaction that made it final. One INSERT ... SELECT: the job's row decides."""
    event_type = case(
        *[(Job.status == status, literal(name)) for status, name in EVENT_TYPES.items()],
        else_=literal("job.finished"),
    )
    session.execute(
        insert(WebhookEvent).from_select(
            ["id", "job_id", "type", "created_at", "next_at", "attempts"],
            select(
                literal("msg_" + uuid.uuid4().hex),
                Job.id,
                event_type,
                db_now(),
                db_now(),
                literal(0),
            ).where(
                Job.id == job_id,
                Job.callback_url.is_not(None),
                Job.status.in_(FINAL_STATUSES),
                ~exists().where(WebhookEvent.job_id == job_id),
            ),
        )
    )


def forget(session: Session, job_id: str) -> None:
    """A deleted job's event and attempts go with it."""
    ids = select(WebhookEvent.id).where(WebhookEvent.job_id == job_id).scalar_subquery()
    session.execute(delete(WebhookDelivery).where(WebhookDelivery.event_id.in_(ids)))
    session.execute(delete(WebhookEvent).where(WebhookEvent.job_id == job_id))


def deliveries(session: Session, job_id: str) -> tuple[WebhookEvent, list[WebhookDelivery]] | None:
    event = session.execute(
        select(WebhookEvent).where(WebhookEvent.job_id == job_id)
    ).scalar_one_or_none()
    if event is None:
        return None
    attempts = session.execute(
        select(WebhookDelivery)
        .where(WebhookDelivery.event_id == event.id)
        .order_by(WebhookDelivery.attempt)
    ).scalars()
    return event, list(attempts)


def due_events(limit: int = 100) -> list[str]:
    with session_scope(readonly=True) as session:
        return list(
            session.execute(
                select(WebhookEvent.id)
                .where(WebhookEvent.next_at <= db_now())
                .order_by(WebhookEvent.next_at)
                .limit(limit)
            ).scalars()
        )


def claim(event_id: str, lease_s: float) -> bool:
    with session_scope() as session:
        return bool(
            session.execute(
                update(WebhookEvent)
                .where(WebhookEvent.id == event_id, WebhookEvent.next_at <= db_now())
                .values(next_at=db_now_plus(lease_s))
            ).rowcount  # type: ignore[attr-defined]
        )


def backoff_s(attempts: int, settings: Settings) -> float:
    """Seconds before try `attempts + 1`: the base, doubled each time, up to the cap."""
    exponent = min(max(0, attempts - 1), 30)
    return float(min(settings.webhook_backoff_max_s, settings.webhook_backoff_s * 2**exponent))


# ---- sending ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Message:
    id: str
    url: str
    secret: str | None
    body: bytes


class WebhookError(Exception):
    pass


def _body(session: Session, event: WebhookEvent, job: Job) -> bytes:
    """Fixed at the first attempt (the job is final, but its delivery fields still move)."""
    if event.body is None:
        data = job_view.full_view(session, job).model_dump(mode="json")
        document = {"type": event.type, "timestamp": data["finished_at"], "data": data}
        event.body = json.dumps(document).encode()
    return event.body


def _message(event_id: str, settings: Settings) -> _Message | None:
    with session_scope() as session:
        event = session.get(WebhookEvent, event_id)
        job = session.get(Job, event.job_id) if event is not None else None
        if event is None or job is None or job.callback_url is None:
            return None
        if job.owner_key_id is not None:
            key = session.get(ApiKey, job.owner_key_id)
            secret = key.webhook_secret if key is not None else None
        else:
            secret = settings.webhook_secret or None
        return _Message(event.id, job.callback_url, secret, _body(session, event, job))


def send(
    event_id: str, settings: Settings, post: Callable[..., httpx.Response] | None = None
) -> bool:
    """One attempt, if the event is due and this call wins the claim; True if delivered."""
    if not claim(event_id, settings.webhook_timeout_s + 60):
        return False
    message = _message(event_id, settings)
    if message is None:
        return False
    started = time.monotonic()
    status: int | None = None
    try:
        check_url(message.url, settings)
        if message.secret is None:
            raise WebhookError("there is no secret to sign it with (REVIEWSCORE_WEBHOOK_SECRET)")
        answer = (post or httpx.post)(
            message.url,
            content=message.body,
            headers=headers(message.secret, message.id, int(time.time()), message.body),
            timeout=httpx.Timeout(settings.webhook_timeout_s),
            follow_redirects=False,
        )
        status = answer.status_code
        if not answer.is_success:
            raise WebhookError(f"{shown(message.url)} answered {status}")
        error = None
    except Exception as exc:  # noqa: BLE001 - every failure is recorded and retried
        error = _reason(exc, message.url, settings)
    _settle(message.id, status, error, int((time.monotonic() - started) * 1000), settings)
    return error is None


def _reason(exc: Exception, url: str, settings: Settings) -> str:
    if isinstance(exc, WebhookError):
        return str(exc)
    if isinstance(exc, httpx.TimeoutException):
        return f"{shown(url)} did not answer within {settings.webhook_timeout_s:g} s"
    if isinstance(exc, httpx.ConnectError):
        return f"{shown(url)} could not be reached: {exc}"
    message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
    # httpx puts the URL, query string included, in some messages: never keep a token.
    return str(message).replace(url, shown(url))[:500]


def _settle(
    event_id: str, status: int | None, error: str | None, duration_ms: int, settings: Settings
) -> None:
    with session_scope() as session:
        attempt = (
            1
            + session.execute(
                select(WebhookEvent.attempts).where(WebhookEvent.id == event_id)
            ).scalar_one()
        )
        session.add(
            WebhookDelivery(
                event_id=event_id,
                attempt=attempt,
                sent_at=db_now(),
                status_code=status,
                error=error,
                duration_ms=duration_ms,
            )
        )
        values: dict[str, Any]
        if error is None:
            values = {"delivered_at": db_now(), "next_at": null(), "error": None}
        else:
            too_old = WebhookEvent.created_at < db_now_plus(-settings.webhook_retry_for_s)
            values = {
                "next_at": case((too_old, null()), else_=db_now_plus(backoff_s(attempt, settings))),
                "error": case(
                    (too_old, literal(f"gave up after {_attempts(attempt)}: {error}")),
                    else_=literal(f"attempt {attempt} failed: {error}"),
                ),
            }
        session.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id == event_id)
            .values(attempts=attempt, **values)
        )
    if error is None:
        log.info("webhook %s delivered (attempt %s)", event_id, attempt)
    else:
        event_counts.count(event_counts.WEBHOOK_ATTEMPTS_FAILED)
        log.warning("webhook %s not delivered (attempt %s): %s", event_id, attempt, error)


def _attempts(n: int) -> str:
    return f"{n} attempt" + ("s" if n != 1 else "")


def send_due(settings: Settings, post: Callable[..., httpx.Response] | None = None) -> int:
    """Sends every due event, a few at once (one hanging receiver holds only its own);
    returns how many were delivered."""
    ids = due_events()
    if not ids:
        return 0
    with ThreadPoolExecutor(min(SENDERS, len(ids)), thread_name_prefix="webhook") as pool:
        return sum(pool.map(lambda event_id: _send_logged(event_id, settings, post), ids))


def _send_logged(
    event_id: str, settings: Settings, post: Callable[..., httpx.Response] | None
) -> bool:
    try:
        return send(event_id, settings, post)
    except Exception as exc:  # noqa: BLE001 - still due once its lease ends: sent again
        log.warning("webhook %s: could not send: %s", event_id, exc)
        return False


_background = threading.Lock()


def send_due_in_background(settings: Settings) -> None:
    """send_due in a thread of its own, at most one per process: the sweep never waits on a
    receiver."""
    if not _background.acquire(blocking=False):
        return

    def run() -> None:
        try:
            send_due(settings)
        finally:
            _background.release()

    threading.Thread(target=run, name="webhooks-due", daemon=True).start()


def send_soon(job_id: str) -> None:
    """The first attempt for a job that just ended (after its transaction committed), in a
    thread: the caller (a chunk's task, a cancel) does not wait for the receiver. If this
    process dies first, the sweeper sends it."""

    def run() -> None:
        try:
            with session_scope(readonly=True) as session:
                event_id = session.execute(
                    select(WebhookEvent.id).where(WebhookEvent.job_id == job_id)
                ).scalar_one_or_none()
            if event_id is not None:
                _send_logged(event_id, get_settings(), None)
        except Exception as exc:  # noqa: BLE001 - the sweeper sends it
            log.warning("webhook of job %s: could not send now: %s", job_id, exc)

    threading.Thread(target=run, name=f"webhook-{job_id}", daemon=True).start()
