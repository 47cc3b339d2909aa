"""Row 3, a naive queue: one Celery task per review, each answer read from the result backend,
on the same Redis and worker as the service."""

from __future__ import annotations

import time

from bench.config import Config
from bench.results import CallsRow
from bench.service import Service
from reviewscore.core.celery_app import SCORE_TEXTS, SINGLES_QUEUE, make_celery


def measure_naive(cfg: Config, service: Service, texts: list[str]) -> CallsRow:
    app = make_celery(service.settings)
    sample = texts[: cfg.naive_tasks]
    try:
        started = time.perf_counter()
        pending = [
            app.send_task(SCORE_TEXTS, args=[[t], None], queue=SINGLES_QUEUE) for t in sample
        ]
        for result in pending:
            result.get(timeout=600)
            result.forget()
        elapsed = time.perf_counter() - started
    finally:
        app.close()
    return CallsRow(calls=len(sample), seconds=elapsed)
