"""Prometheus metrics of the service, read from the database and Redis at scrape time."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import func, select

from reviewscore.core.celery_app import BULK_QUEUE, SINGLES_QUEUE, queue_depth
from reviewscore.core.db import session_scope
from reviewscore.core.model_registry import default_model_name, list_models
from reviewscore.core.schema import Chunk, Job
from reviewscore.core.settings import get_settings


def render() -> tuple[bytes, str]:
    registry = CollectorRegistry()
    jobs_by_status = Gauge("reviewscore_jobs", "Jobs by status", ["status"], registry=registry)
    rows = Gauge("reviewscore_rows", "Rows of all jobs by outcome", ["outcome"], registry=registry)
    depth = Gauge("reviewscore_queue_depth", "Messages waiting", ["queue"], registry=registry)
    model = Gauge(
        "reviewscore_model_info",
        "Installed models",
        ["name", "version", "default"],
        registry=registry,
    )
    with session_scope(readonly=True) as session:
        for status, count in session.execute(select(Job.status, func.count()).group_by(Job.status)):
            jobs_by_status.labels(status).set(count)
        scored, failed = session.execute(
            select(
                func.coalesce(func.sum(Chunk.scored_rows), 0),
                func.coalesce(func.sum(Chunk.failed_rows), 0),
            )
        ).one()
        rows.labels("scored").set(scored)
        rows.labels("failed").set(failed)
        installed = list_models(session)
    for queue in (BULK_QUEUE, SINGLES_QUEUE):
        # Redis down: leave the gauge out rather than fail the scrape.
        with contextlib.suppress(Exception):
            depth.labels(queue).set(queue_depth(queue))
    settings = get_settings()
    default = default_model_name(installed, settings.default_model)
    for m in installed:
        model.labels(m.name, m.version, str(m.name == default).lower()).set(1)
    return generate_latest(registry), CONTENT_TYPE_LATEST
