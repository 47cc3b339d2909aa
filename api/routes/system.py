"""Health, readiness, installed models and Prometheus metrics."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any, TypeVar

import anyio
import redis
from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, event, text

from api import metrics
from api.auth import current_key_id, metrics_token
from api.schemas import ModelList, ModelView, Readiness, error_responses
from api.worker_models import WorkerModels, worker_models
from reviewscore.core.celery_app import celery_app, reported_devices, reported_workers
from reviewscore.core.db import is_sqlite, make_engine, session_scope
from reviewscore.core.model_registry import default_model_name, list_models
from reviewscore.core.settings import get_settings

T = TypeVar("T")
router = APIRouter(tags=["system"])
_worker_cache: dict[str, Any] = {"at": 0.0, "workers": [], "devices": []}
_checks: dict[str, anyio.CapacityLimiter] = {}


# On the event loop on purpose: no I/O, so it answers even when every worker thread is taken.
@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@lru_cache
def redis_client() -> redis.Redis:
    settings = get_settings()
    return redis.Redis.from_url(
        settings.broker_url,
        socket_timeout=settings.health_timeout_s,
        socket_connect_timeout=settings.health_timeout_s,
    )


@lru_cache
def probe_engine() -> Engine:
    """The database as the API writes to it, but waiting at most the health timeout for a lock."""
    settings = get_settings()
    engine = make_engine(settings.database_url)
    if is_sqlite(engine):
        busy_ms = int(settings.health_timeout_s * 1000)

        def short_busy_timeout(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.execute(f"PRAGMA busy_timeout={busy_ms}")

        event.listen(engine, "connect", short_busy_timeout)
    return engine


def check_database_writes() -> None:
    """Commits a write that changes nothing: a held write lock, a read-only file, a full disk
    or a database that is down all fail here, as they would fail an upload."""
    engine = probe_engine()
    with engine.begin() as conn:  # on SQLite: BEGIN IMMEDIATE, the write lock
        if not is_sqlite(engine):
            ms = int(get_settings().health_timeout_s * 1000)
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = {ms}")
            conn.exec_driver_sql(f"SET LOCAL statement_timeout = {ms}")
        conn.execute(text("UPDATE alembic_version SET version_num = version_num"))


def check_redis() -> None:
    redis_client().ping()


def _ping_workers() -> tuple[list[str], list[str]]:
    # Pinging waits for answers; remember them briefly so polling /readyz stays cheap.
    if time.monotonic() - _worker_cache["at"] < 5 and _worker_cache["devices"]:
        return _worker_cache["workers"], _worker_cache["devices"]
    replies = celery_app.control.ping(timeout=1.0) or []
    workers = sorted(name for reply in replies for name in reply)
    devices = sorted(set(reported_devices().values()))
    _worker_cache.update(at=time.monotonic(), workers=workers, devices=devices)
    return workers, devices


async def off_loop(check: Callable[[], T], timeout: float) -> tuple[str, T | None]:
    """Runs a blocking check in a thread of its own pool, never on the event loop nor in the
    pool every `def` route shares; gives up waiting after `timeout` (the thread, bounded by
    its socket timeouts, finishes by itself). Returns ("ok", value) or ("error: ...", None)."""
    limiter = _checks.setdefault("limiter", anyio.CapacityLimiter(8))
    try:
        with anyio.fail_after(timeout):
            value = await anyio.to_thread.run_sync(check, abandon_on_cancel=True, limiter=limiter)
        return "ok", value
    except TimeoutError:
        return f"error: no answer within {timeout:g} s", None
    except Exception as exc:  # noqa: BLE001 - readiness reports any failure as a reason
        return f"error: {exc.__class__.__name__}: {exc}"[:300], None


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz() -> Response:
    timeout = get_settings().health_timeout_s
    found: dict[str, str] = {}

    async def run(name: str, check: Callable[[], None]) -> None:
        # The checks' own timeouts (socket, lock) are `timeout`: let them speak first.
        found[name], _ = await off_loop(check, timeout + 1.0)

    async with anyio.create_task_group() as group:
        group.start_soon(run, "database", check_database_writes)
        group.start_soon(run, "redis", check_redis)
    workers: list[str] = []
    devices: list[str] = []
    models: WorkerModels | None = None
    if found["redis"] == "ok":
        _, answer = await off_loop(_ping_workers, timeout + 1.0)
        workers, devices = answer or ([], [])
        _, models = await off_loop(lambda: worker_models(reported_workers()), timeout + 1.0)
    ready = found["database"] == "ok" and found["redis"] == "ok" and bool(workers and devices)
    body = Readiness(
        # A worker answers pings before its pool has loaded the model: wait for a device too.
        ready=ready,
        status="unready" if not ready else "degraded" if models and models.degraded else "ready",
        database=found["database"],
        redis=found["redis"],
        workers=workers,
        devices=devices,
        worker_models=models.workers if models else {},
        problems=models.problems if models else [],
    )
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


# Everything under /v1 needs a key in production, the model list included. No tags of its own:
# FastAPI adds a route's tags to its router's, which listed it twice on /docs.
@router.get(
    "/v1/models",
    response_model=ModelList,
    dependencies=[Depends(current_key_id)],
    responses=error_responses(),
)
def models() -> ModelList:
    settings = get_settings()
    with session_scope(readonly=True) as session:
        installed = list_models(session)
    default = default_model_name(installed, settings.default_model)
    return ModelList(
        models=[
            ModelView(
                name=m.name,
                version=m.version,
                architecture=m.architecture,
                default=m.name == default,
                test_accuracy=m.test_accuracy,
                max_tokens=m.max_tokens,
            )
            for m in installed
        ]
    )


@router.get(
    "/metrics",
    response_class=Response,
    include_in_schema=False,
    dependencies=[Depends(metrics_token)],
)
def prometheus_metrics() -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
