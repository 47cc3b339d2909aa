"""Infrastructure failures as honest answers: when the database or Redis fails, the client gets a
JSON 503 `{"detail": ...}` naming the part that failed, with `Retry-After`, never a plain-text
500. Installed by api/main.py (`errors.install(app)`)."""

from __future__ import annotations

import logging

import kombu.exceptions
import redis.exceptions
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from reviewscore.core.errors import ServiceUnavailableError

log = logging.getLogger("reviewscore.api")
RETRY_AFTER_S = 5

DATABASE_ERRORS: tuple[type[Exception], ...] = (
    sqlalchemy.exc.OperationalError,  # locked past the busy timeout, read-only, disk full, down
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,  # no pooled connection came free
)
REDIS_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.AuthenticationError,
    kombu.exceptions.OperationalError,  # a task could not be sent
)


class BusyError(ServiceUnavailableError):
    """The service cannot take this request now; the client may try again after a while."""

    def __init__(self, message: str, retry_after_s: int = RETRY_AFTER_S) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def reason(exc: BaseException) -> str:
    """The driver's own words (its first line), without SQLAlchemy's SQL and parameters."""
    while isinstance(exc, RuntimeError) and (exc.__cause__ or exc.__context__):
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    return f"{type(cause).__name__}: {text}"[:200] if text else type(cause).__name__


def failed_part(exc: BaseException) -> str | None:
    """ "database" or "redis" if `exc`, or what caused it, is one of their failures. Celery
    wraps a lost result-store connection in a RuntimeError; its cause says what failed."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DATABASE_ERRORS):
            return "database"
        if isinstance(current, REDIS_ERRORS):
            return "redis"
        current = current.__cause__ or current.__context__
    return None


def unavailable(exc: BusyError) -> JSONResponse:
    return JSONResponse(
        {"detail": exc.message},
        status_code=exc.status_code,
        headers={"Retry-After": str(exc.retry_after_s)},
    )


def install(app: FastAPI) -> None:
    async def busy(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, BusyError)
        return unavailable(exc)

    async def database_failed(request: Request, exc: Exception) -> JSONResponse:
        log.warning("%s %s: the database failed: %s", request.method, request.url.path, exc)
        return unavailable(
            BusyError(f"the database is unavailable ({reason(exc)}); try again shortly")
        )

    async def redis_failed(request: Request, exc: Exception) -> JSONResponse:
        log.warning("%s %s: Redis failed: %s", request.method, request.url.path, exc)
        return unavailable(
            BusyError(f"Redis (the task queue) is unavailable ({reason(exc)}); try again shortly")
        )

    async def wrapped_failure(request: Request, exc: Exception) -> JSONResponse:
        part = failed_part(exc)
        if part == "database":
            return await database_failed(request, exc)
        if part == "redis":
            return await redis_failed(request, exc)
        raise exc  # not an infrastructure failure: the usual 500

    app.add_exception_handler(BusyError, busy)
    app.add_exception_handler(RuntimeError, wrapped_failure)
    for error in DATABASE_ERRORS:
        app.add_exception_handler(error, database_failed)
    for error in REDIS_ERRORS:
        app.add_exception_handler(error, redis_failed)
