"""Scoring histograms kept in Redis: workers on any host observe them, the API's /metrics shows them."""

from __future__ import annotations

from typing import Any

from reviewscore.core.celery_app import celery_app

KEY = "reviewscore:hist:{name}:{path}"
BUCKETS: dict[str, list[float]] = {
    "batch_size": [1, 4, 16, 32, 64, 128, 256, 512, 1000, 2000, 5000],
    "scoring_seconds": [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
}
PATHS = ("bulk", "singles")


def observe(path: str, batch_size: int, seconds: float) -> None:
    """One model pass: how many texts it scored and how long the model took."""
    with celery_app.connection_for_write() as conn:
        pipe = conn.default_channel.client.pipeline(transaction=False)
        for name, value in (("batch_size", float(batch_size)), ("scoring_seconds", seconds)):
            key = KEY.format(name=name, path=path)
            for le in BUCKETS[name]:
                if value <= le:
                    pipe.hincrby(key, repr(float(le)), 1)
            pipe.hincrby(key, "count", 1)
            pipe.hincrbyfloat(key, "sum", value)
        pipe.execute()


def read() -> dict[tuple[str, str], dict[str, Any]]:
    """(name, path) -> {"buckets": [(le, cumulative count)], "count": n, "sum": s}."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    with celery_app.connection_for_read() as conn:
        client = conn.default_channel.client
        for name, bounds in BUCKETS.items():
            for path in PATHS:
                raw = client.hgetall(KEY.format(name=name, path=path))
                values = {
                    (k.decode() if isinstance(k, bytes) else k): float(v) for k, v in raw.items()
                }
                count = values.get("count", 0.0)
                buckets = [(str(le), values.get(repr(float(le)), 0.0)) for le in bounds]
                found[(name, path)] = {
                    "buckets": buckets + [("+Inf", count)],
                    "count": count,
                    "sum": values.get("sum", 0.0),
                }
    return found
