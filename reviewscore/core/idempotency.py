"""Idempotent submission: an Idempotency-Key sent with POST /v1/jobs binds, for a day, the
request it came with (its sha256: options and file bytes, or options alone for a job in
parts or from a source_url) to the job that request made. The same key with the same request
answers that job again; with another request it is refused (422). Keys are per API key (or
anonymous), so two users never see each other's jobs through a key.

A key is bound once its job is made (for one upload, once the whole file is stored), so a
request that was refused or broke off binds nothing and can be sent again under its key. Two
requests sent at once with the same key both run; the table's primary key lets one bind, and
the other discards its job and answers the winner's."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from typing import Any, BinaryIO

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError

from reviewscore.core import jobs
from reviewscore.core.clock import db_now_plus
from reviewscore.core.db import session_scope
from reviewscore.core.errors import BadRequestError
from reviewscore.core.schema import IdempotencyKey

HEADER = "Idempotency-Key"
WINDOW_S = 86400.0
MAX_KEY = 255


class IdempotencyConflictError(BadRequestError):
    """The key was used within the window for another request."""


@dataclass(frozen=True)
class RequestKey:
    scope: str
    key: str


def request_key(header: str | None, owner_key_id: int | None) -> RequestKey | None:
    """The key of a request, scoped to its API key; None without the header."""
    if header is None:
        return None
    if not 1 <= len(header) <= MAX_KEY or not header.isascii() or not header.isprintable():
        raise BadRequestError(
            f"header {HEADER!r}: 1 to {MAX_KEY} printable ASCII characters, e.g. a UUID "
            f"(got {len(header)} characters)"
        )
    scope = "anonymous" if owner_key_id is None else f"key:{owner_key_id}"
    return RequestKey(scope, header)


def fingerprint(kind: str, described: dict[str, Any]) -> Any:
    """A sha256 started with what the request asks for (its kind and options); an upload's
    file bytes are added to it as they are read (HashingReader)."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"kind": kind, **described}, sort_keys=True, default=str).encode())
    digest.update(b"\0")
    return digest


class HashingReader(io.RawIOBase):
    """An upload's file bytes as the parser reads them, added to the request's sha256."""

    def __init__(self, raw: BinaryIO, digest: Any) -> None:
        self._raw = raw
        self.digest = digest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._raw.read(len(buffer))
        buffer[: len(data)] = data
        self.digest.update(data)
        return len(data)

    def drain(self) -> str:
        """Reads what the parser left (or the whole file, to compare it) and returns the
        request's sha256."""
        while data := self._raw.read(1 << 16):
            self.digest.update(data)
        return str(self.digest.hexdigest())


@dataclass(frozen=True)
class Earlier:
    job_id: str
    request_sha256: str


def earlier(key: RequestKey) -> Earlier | None:
    """The request bound to the key within the window, if any."""
    with session_scope(readonly=True) as session:
        found = session.execute(
            select(IdempotencyKey.job_id, IdempotencyKey.request_sha256).where(
                IdempotencyKey.scope == key.scope,
                IdempotencyKey.key == key.key,
                IdempotencyKey.created_at >= db_now_plus(-WINDOW_S),
            )
        ).one_or_none()
    return None if found is None else Earlier(found[0], found[1])


def answer(key: RequestKey, found: Earlier, request_sha256: str) -> str:
    """The earlier request's job if this request is the same; a 422 otherwise."""
    if found.request_sha256 != request_sha256:
        raise IdempotencyConflictError(
            f"{HEADER} {key.key[:60]!r} was used in the last 24 h for another request (job "
            f"{found.job_id}), with other options or another file: send this request under "
            "a new key"
        )
    return found.job_id


def bind(key: RequestKey, request_sha256: str, job_id: str) -> tuple[str, bool]:
    """Binds the key to the job this request made. Returns the job to answer and whether it
    is another request's: when one sent at once with the same key bound first, this job is
    discarded and that one answered (or a 422 if that request was another)."""
    for _ in range(3):
        with session_scope() as session:
            # A binding past the window no longer counts: the key may make a new job.
            session.execute(
                delete(IdempotencyKey).where(
                    IdempotencyKey.scope == key.scope,
                    IdempotencyKey.key == key.key,
                    IdempotencyKey.created_at < db_now_plus(-WINDOW_S),
                )
            )
        try:
            with session_scope() as session:
                session.execute(
                    insert(IdempotencyKey).values(
                        scope=key.scope,
                        key=key.key,
                        request_sha256=request_sha256,
                        job_id=job_id,
                    )
                )
            return job_id, False
        except IntegrityError:
            found = earlier(key)
        if found is not None:
            try:
                return answer(key, found, request_sha256), True
            finally:
                jobs.discard(job_id)
    raise BadRequestError(f"{HEADER} {key.key[:60]!r} is being used by other requests right now")
