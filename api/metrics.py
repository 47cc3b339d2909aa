"""Prometheus metrics of the service: jobs, rows, queues and models read at scrape time, and the
API's own HTTP requests.

Rows scored and failed are counters that never fall, though a deleted job takes its rows (and so
its share of the chunks' ledger) with it. Each scrape adds what every job gained since it was
last counted to a running total in Redis, under one Lua script: a job's "already counted" mark
and the total move together, so several API processes, or two scrapes at once, never count a
row twice, and an API restart forgets nothing (the state is in Redis, not in the process; the
embedded and the compose Redis keep it with AOF). A job is counted once more just before a
DELETE of it, so its last rows are in the total before they go.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from functools import lru_cache
from typing import Any

import anyio
import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import func, select

from api.worker_models import worker_models
from reviewscore.core.celery_app import BULK_QUEUE, SINGLES_QUEUE, priority_lists, reported_workers
from reviewscore.core.db import session_scope
from reviewscore.core.model_registry import default_model_name, list_models
from reviewscore.core.schema import Chunk, Job
from reviewscore.core.settings import get_settings

log = logging.getLogger("reviewscore.api.metrics")

TOTALS_KEY = "reviewscore:metrics:rows_total"
COUNTED_KEY = "reviewscore:metrics:rows_counted"
# ARGV: job id, scored, failed, ... (each job's ledger now). A job's mark holds what was
# counted ("scored:failed"); only growth beyond it is added, and the mark moves with the total.
ADD_GROWTH = """
local added_scored, added_failed = 0, 0
for i = 1, #ARGV, 3 do
  local job, scored, failed = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local mark = redis.call('HGET', KEYS[2], job)
  local old_scored, old_failed = 0, 0
  if mark then
    local sep = string.find(mark, ':', 1, true)
    old_scored = tonumber(string.sub(mark, 1, sep - 1))
    old_failed = tonumber(string.sub(mark, sep + 1))
  end
  if scored > old_scored then added_scored = added_scored + scored - old_scored
  else scored = old_scored end
  if failed > old_failed then added_failed = added_failed + failed - old_failed
  else failed = old_failed end
  redis.call('HSET', KEYS[2], job, scored .. ':' .. failed)
end
redis.call('HINCRBY', KEYS[1], 'scored', added_scored)
redis.call('HINCRBY', KEYS[1], 'failed', added_failed)
return redis.call('HMGET', KEYS[1], 'scored', 'failed')
"""
PRUNE_BATCH = 500
GONE_KEY = "reviewscore:metrics:rows_gone"
# Far longer than a scrape can take between reading the ledgers and adding them up.
GONE_GRACE_S = 600

# ---------------------------------------------------------------- HTTP requests ----

# Per process, like any Prometheus client: Prometheus keeps one series per API instance.
HTTP_REGISTRY = CollectorRegistry()
HTTP_REQUESTS = Counter(
    "reviewscore_http_requests",
    "HTTP requests answered, by method, route template and status",
    ["method", "route", "status"],
    registry=HTTP_REGISTRY,
)
HTTP_LATENCY = Histogram(
    "reviewscore_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer's body",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=HTTP_REGISTRY,
)
DELETE_JOB = re.compile(r"^/v1/jobs/([0-9a-f]{32})$")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class RequestMetrics:
    """ASGI middleware counting requests and timing them by route template (`/v1/jobs/{job_id}`,
    never the raw path: one series per route, not per job). Unmatched paths share one label."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "DELETE" and (match := DELETE_JOB.match(scope["path"])):
            await anyio.to_thread.run_sync(count_rows_before_delete, match.group(1))
        started = time.perf_counter()
        status = 500  # what the server error handler outside this middleware answers

        async def send_and_note(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            labels = (scope["method"], route, str(status))
            HTTP_REQUESTS.labels(*labels).inc()
            HTTP_LATENCY.labels(*labels).observe(time.perf_counter() - started)


# ---------------------------------------------------------------- rows ----


@lru_cache
def _redis() -> redis.Redis:
    # Its own client with short timeouts, not Celery's connection (which retries for seconds):
    # a Redis that is down must not hold up a scrape or a DELETE. One per process: its pool
    # keeps the connection between scrapes.
    settings = get_settings()
    options: dict[str, Any] = {
        "socket_connect_timeout": 1,
        "socket_timeout": 2,
        # No backoff (redis-py's would wait seconds); one more try only for a connection that
        # died in the pool (a Redis restart), never for a Redis that does not answer in time.
        "retry": Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,)),
    }
    return redis.Redis.from_url(settings.broker_url, **options)


def _ledgers(job_id: str | None = None) -> list[tuple[str, int, int]]:
    """Each job's rows scored and failed so far, from the chunks' ledger."""
    query = select(
        Chunk.job_id,
        func.coalesce(func.sum(Chunk.scored_rows), 0),
        func.coalesce(func.sum(Chunk.failed_rows), 0),
    ).group_by(Chunk.job_id)
    if job_id is not None:
        query = query.where(Chunk.job_id == job_id)
    with session_scope(readonly=True) as session:
        return [(str(j), int(s), int(f)) for j, s, f in session.execute(query)]


def add_growth(ledgers: list[tuple[str, int, int]]) -> tuple[int, int]:
    """Adds each job's growth since it was last counted; returns the totals (scored, failed)."""
    args = [str(value) for ledger in ledgers for value in ledger]
    scored, failed = _redis().eval(ADD_GROWTH, 2, TOTALS_KEY, COUNTED_KEY, *args)
    return int(scored or 0), int(failed or 0)


def prune_marks() -> None:
    """Forgets the marks of deleted jobs, a while after they went: a scrape that read a job's
    ledger just before its delete may still be on its way to Redis, and without the mark it
    would count the job again. A job that is gone never comes back (ids are random)."""
    now = time.time()
    client = _redis()
    marked = [k.decode() if isinstance(k, bytes) else str(k) for k in client.hkeys(COUNTED_KEY)]
    for start in range(0, len(marked), PRUNE_BATCH):
        batch = marked[start : start + PRUNE_BATCH]
        with session_scope(readonly=True) as session:
            alive = set(session.scalars(select(Job.id).where(Job.id.in_(batch))))
        gone = [job_id for job_id in batch if job_id not in alive]
        if not gone:
            continue
        since = client.hmget(GONE_KEY, gone)
        expired = [
            j for j, t in zip(gone, since, strict=True) if t and now - float(t) > GONE_GRACE_S
        ]
        for job_id, seen in zip(gone, since, strict=True):
            if seen is None:
                client.hsetnx(GONE_KEY, job_id, now)
        if expired:
            client.hdel(COUNTED_KEY, *expired)
            client.hdel(GONE_KEY, *expired)


def count_rows_before_delete(job_id: str) -> None:
    # Best effort: a failure here must not stop the delete itself.
    try:
        add_growth(_ledgers(job_id))
    except Exception:  # noqa: BLE001
        log.warning("could not count job %s's rows before its delete", job_id, exc_info=True)


class RowCounters(Collector):
    def __init__(self, scored: int, failed: int) -> None:
        self.values = {"scored": scored, "failed": failed}

    def collect(self) -> Iterator[Metric]:
        rows = CounterMetricFamily(
            "reviewscore_rows",
            "Rows finished since the service began, by outcome; deleting a job never lowers it",
            labels=["outcome"],
        )
        for outcome, value in self.values.items():
            rows.add_metric([outcome], value)
        yield rows


# ---------------------------------------------------------------- the scrape ----


def render() -> tuple[bytes, str]:
    registry = CollectorRegistry()
    jobs_by_status = Gauge("reviewscore_jobs", "Jobs by status", ["status"], registry=registry)
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
        installed = list_models(session)
    try:
        registry.register(RowCounters(*add_growth(_ledgers())))
        prune_marks()
        # Through this module's client (short timeouts, no retries), not Celery's connection,
        # which retries for seconds: a hung Redis must not hold up the scrape.
        client = _redis()
        for queue in (BULK_QUEUE, SINGLES_QUEUE):
            depth.labels(queue).set(sum(int(client.llen(n)) for n in priority_lists(queue)))
        # What each worker process reports to Redis (renewed every 30 s, gone 90 s after a
        # process died): ready (its model loaded), failed (a model error), or still loading.
        reports = reported_workers(client)
        processes = Gauge(
            "reviewscore_worker_processes",
            "Worker processes reporting to Redis, by state: ready, failed (a model error), loading",
            ["state"],
            registry=registry,
        )
        for state in ("ready", "failed", "loading"):
            processes.labels(state).set(0)
        for report in reports.values():
            state = (
                "failed" if report.get("error") else "ready" if report.get("device") else "loading"
            )
            processes.labels(state).inc()
        # Registered only once known: a gauge without labels would read 0 ("fine") otherwise.
        Gauge(
            "reviewscore_workers_degraded",
            "1 while /readyz says degraded: a worker process reports a model error, or worker "
            "processes serve different versions of one model",
            registry=registry,
        ).set(int(worker_models(reports).degraded))
    except Exception:  # noqa: BLE001
        # Redis down: leave the counters and depths out (a 0 would read as a counter reset).
        log.warning("Redis figures left out of this scrape", exc_info=True)
    settings = get_settings()
    default = default_model_name(installed, settings.default_model)
    for m in installed:
        model.labels(m.name, m.version, str(m.name == default).lower()).set(1)
    return generate_latest(registry) + generate_latest(HTTP_REGISTRY), CONTENT_TYPE_LATEST
