"""Health, readiness, installed models and Prometheus metrics."""

from __future__ import annotations

import time
from typing import Any

import redis
from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api import metrics
from api.auth import current_key_id
from api.schemas import ModelList, ModelView, Readiness, error_responses
from api.worker_models import worker_models
from reviewscore.core.celery_app import celery_app, reported_devices, reported_workers
from reviewscore.core.db import session_scope
from reviewscore.core.model_registry import default_model_name, list_models
from reviewscore.core.settings import get_settings

router = APIRouter(tags=["system"])
_worker_cache: dict[str, Any] = {"at": 0.0, "workers": [], "devices": []}


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def redis_client() -> redis.Redis:
    settings = get_settings()
    if settings.redis_url:
        return redis.Redis.from_url(settings.redis_url, socket_timeout=2)
    return redis.Redis(unix_socket_path=str(settings.redis_socket), socket_timeout=2)


def _ping_workers() -> tuple[list[str], list[str]]:
    # Pinging waits for answers; remember them briefly so polling /readyz stays cheap.
    if time.monotonic() - _worker_cache["at"] < 5 and _worker_cache["devices"]:
        return _worker_cache["workers"], _worker_cache["devices"]
    replies = celery_app.control.ping(timeout=1.0) or []
    workers = sorted(name for reply in replies for name in reply)
    devices = sorted(set(reported_devices().values()))
    _worker_cache.update(at=time.monotonic(), workers=workers, devices=devices)
    return workers, devices


# A plain `def`: its blocking checks run in a worker thread, never on the event loop.
@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
def readyz() -> Response:
    database = redis_state = "ok"
    workers: list[str] = []
    devices: list[str] = []
    try:
        with session_scope(readonly=True) as session:
            session.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - readiness reports any failure as a reason
        database = f"error: {exc.__class__.__name__}: {exc}"[:300]
    try:
        redis_client().ping()
    except Exception as exc:  # noqa: BLE001
        redis_state = f"error: {exc.__class__.__name__}: {exc}"[:300]
    if redis_state == "ok":
        try:
            workers, devices = _ping_workers()
        except Exception:  # noqa: BLE001
            workers = []
    models = None
    if redis_state == "ok":
        try:
            models = worker_models(reported_workers())
        except Exception:  # noqa: BLE001 - Redis went away since the ping: nothing to list
            models = None
    ready = database == "ok" and redis_state == "ok" and bool(workers) and bool(devices)
    body = Readiness(
        # A worker answers pings before its pool has loaded the model: wait for a device too.
        ready=ready,
        status="unready" if not ready else "degraded" if models and models.degraded else "ready",
        database=database,
        redis=redis_state,
        workers=workers,
        devices=devices,
        worker_models=models.workers if models else {},
        problems=models.problems if models else [],
    )
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


# Everything under /v1 needs a key in production, the model list included.
@router.get(
    "/v1/models",
    response_model=ModelList,
    tags=["models"],
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


@router.get("/metrics", response_class=Response, include_in_schema=False)
def prometheus_metrics() -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
