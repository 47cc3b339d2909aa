"""Prometheus metrics of the service, read from the database and Redis at scrape time."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import func, select

from reviewscore.core import worker_metrics
from reviewscore.core.celery_app import BULK_QUEUE, SINGLES_QUEUE, queue_depth
from reviewscore.core.db import session_scope
from reviewscore.core.model_registry import default_model_name, list_models
from reviewscore.core.schema import Job
from reviewscore.core.settings import get_settings


class ScoringHistograms:
    """The workers' histograms from Redis: texts per model pass and the model's time per pass."""

    def collect(self) -> Iterator[Metric]:
        try:
            observed = worker_metrics.read()
        except Exception:  # noqa: BLE001 - Redis down: leave the histograms out
            return
        help_texts = {
            "batch_size": "Texts scored per model pass",
            "scoring_seconds": "Model time per pass, seconds",
        }
        for name, help_text in help_texts.items():
            family = HistogramMetricFamily(f"reviewscore_{name}", help_text, labels=["path"])
            for path in worker_metrics.PATHS:
                data = observed[(name, path)]
                family.add_metric([path], data["buckets"], data["sum"])
            yield family


def render() -> tuple[bytes, str]:
    registry = CollectorRegistry()
    registry.register(ScoringHistograms())  # type: ignore[arg-type]
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
                func.coalesce(func.sum(Job.scored_rows), 0),
                func.coalesce(func.sum(Job.failed_rows), 0),
            )
        ).one()
        rows.labels("scored").set(scored)
        rows.labels("failed").set(failed)
    for queue in (BULK_QUEUE, SINGLES_QUEUE):
        # Redis down: leave the gauge out rather than fail the scrape.
        with contextlib.suppress(Exception):
            depth.labels(queue).set(queue_depth(queue))
    settings = get_settings()
    installed = list_models(settings.models_dir)
    default = default_model_name(installed, settings.default_model)
    for m in installed:
        model.labels(m.name, m.version, str(m.name == default).lower()).set(1)
    return generate_latest(registry), CONTENT_TYPE_LATEST
