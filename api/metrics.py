"""Prometheus metrics of the service: jobs, rows, queues and models read at scrape time, and the
API's own HTTP requests.

Rows scored and failed are counters that never fall, though a deleted job takes its rows (and so
its share of the chunks' ledger) with it. A running total is kept in Redis, and each scrape adds
only what changed: the ledgers of unfinished jobs and of jobs finished since the last scrape
(jobs.finished_at is indexed). A final job's ledger never moves again, so once a scrape has
counted it, it is settled and never read again; the cost of a scrape follows the jobs that are
running or just finished, not the jobs kept. Each job's "already counted" mark and the total
move together in one Lua script, so several API processes, or two scrapes at once (only one
counts: a short lock in Redis), never count a row twice; an API restart forgets nothing (the
state is in Redis, not in the process; the embedded and the compose Redis keep it with AOF). A
job is counted once more just before a DELETE of it, so its last rows are in the total first.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from datetime import UTC, datetime
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
from sqlalchemy import func, select, union

from api.worker_models import worker_models
from reviewscore.core import event_counts, redis_keys
from reviewscore.core.celery_app import BULK_QUEUE, SINGLES_QUEUE, priority_lists, reported_workers
from reviewscore.core.clock import db_now, db_now_plus
from reviewscore.core.db import session_scope
from reviewscore.core.jobs import UNFINISHED
from reviewscore.core.model_registry import default_model_name, list_models
from reviewscore.core.schema import Chunk, Job
from reviewscore.core.settings import get_settings

log = logging.getLogger("reviewscore.api.metrics")

TOTALS_KEY = redis_keys.METRICS_ROWS_TOTAL
COUNTED_KEY = redis_keys.METRICS_ROWS_COUNTED
# The database time (epoch seconds) before which every finished job is counted: settled.
SETTLED_KEY = redis_keys.METRICS_ROWS_SETTLED
# Jobs a DELETE counted, by when (Redis time): their marks go once the job is gone for good.
GONE_KEY = redis_keys.METRICS_ROWS_GONE
# The hash the versions before kept for the same purpose (dropped on the first scrape).
OLD_GONE_KEY = redis_keys.METRICS_ROWS_GONE_BEFORE
LOCK_KEY = redis_keys.METRICS_ROWS_LOCK
LOCK_MS = 30_000
# A job that finished this long before a scrape read the database is visible to it as final
# (a completion stamps finished_at with its statement's time and commits at once).
SETTLE_MARGIN_S = 60
# Far longer than a scrape or a DELETE can take between reading a ledger and adding it up.
GONE_GRACE_S = 600
PRUNE_BATCH = 500
EVAL_JOBS = 2000
# KEYS: totals, marks, settled, gone, lock. ARGV: the lock's token (or "" for a DELETE's count,
# which takes no lock), the database's time of the read (or 0), the settling margin, "1" for the
# last call of a scrape (it settles and unlocks; a scrape sends at most EVAL_JOBS jobs a call,
# so Redis is never blocked for long, even on a first scrape of every job), then per job: id, scored,
# failed, finished (epoch seconds; 0 while unfinished). A job's mark holds what was counted
# ("scored:failed"); only growth beyond it is added, and the mark moves with the total. A final
# job finished before the settled time was counted in full already: it is skipped, and its
# mark dropped once it is settled.
ADD_GROWTH = """
local token, now = ARGV[1], tonumber(ARGV[2])
if token ~= '' and redis.call('GET', KEYS[5]) ~= token then
  return redis.call('HMGET', KEYS[1], 'scored', 'failed')
end
local settled = tonumber(redis.call('GET', KEYS[3]) or '0')
local margin, last = tonumber(ARGV[3]), ARGV[4] == '1'
local added_scored, added_failed = 0, 0
for i = 5, #ARGV, 4 do
  local job, scored, failed = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local finished = tonumber(ARGV[i + 3])
  if finished == 0 or finished >= settled - margin then
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
    if finished > 0 and now > 0 and finished < now - 2 * margin then
      redis.call('HDEL', KEYS[2], job)
    else
      redis.call('HSET', KEYS[2], job, scored .. ':' .. failed)
    end
  end
end
redis.call('HINCRBY', KEYS[1], 'scored', added_scored)
redis.call('HINCRBY', KEYS[1], 'failed', added_failed)
if token ~= '' and last then
  if now - margin > settled then redis.call('SET', KEYS[3], tostring(now - margin)) end
  redis.call('DEL', KEYS[5])
end
return redis.call('HMGET', KEYS[1], 'scored', 'failed')
"""

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
        # When the request came in, for routes whose deadline counts from its arrival
        # (POST /v1/score): before its body is read and parsed, and before auth.
        scope.setdefault("state", {})["arrived"] = time.monotonic()
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


RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end"

Ledger = tuple[str, int, int, float]  # job id, scored, failed, finished (epoch s; 0: not yet)


def _epoch(stamp: datetime | None) -> float:
    if stamp is None:
        return 0.0
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()


def _ledgers(settled: float | None, job_id: str | None = None) -> tuple[float, list[Ledger]]:
    """The database's time and the ledgers to add: one job's, or those of every job not yet
    settled (unfinished, or finished since `settled` less the margin; all on a first scrape)."""
    query = (
        select(
            Job.id,
            func.coalesce(func.sum(Chunk.scored_rows), 0),
            func.coalesce(func.sum(Chunk.failed_rows), 0),
            Job.finished_at,
        )
        .outerjoin(Chunk, Chunk.job_id == Job.id)
        .group_by(Job.id, Job.finished_at)
    )
    with session_scope(readonly=True) as session:
        now = _epoch(session.execute(select(db_now())).scalar_one())
        if job_id is not None:
            query = query.where(Job.id == job_id)
        elif settled is not None:
            since = db_now_plus(-(max(0.0, now - settled) + SETTLE_MARGIN_S))
            # Two index range scans (status, finished_at), not an OR that SQLite reads as a
            # scan of every job.
            kept = Job.deleted_at.is_(None)
            pending = union(
                select(Job.id).where(Job.status.in_(UNFINISHED), kept),
                select(Job.id).where(Job.finished_at >= since, kept),
            )
            query = query.where(Job.id.in_(pending.scalar_subquery()))
        ledgers = [
            (str(j), int(s), int(f), _epoch(done) if done is not None else 0.0)
            for j, s, f, done in session.execute(query)
        ]
    return now, ledgers


def add_growth(ledgers: list[Ledger], token: str = "", now: float = 0.0) -> tuple[int, int]:
    """Adds each job's growth since it was last counted; returns the totals (scored, failed).
    With a scrape's lock `token` and its database time `now`, settles what finished before."""
    keys = (TOTALS_KEY, COUNTED_KEY, SETTLED_KEY, GONE_KEY, LOCK_KEY)
    starts = range(0, max(len(ledgers), 1), EVAL_JOBS)
    for start in starts:
        args = [str(value) for ledger in ledgers[start : start + EVAL_JOBS] for value in ledger]
        last = "1" if start == starts[-1] else "0"
        scored, failed = _redis().eval(
            ADD_GROWTH, len(keys), *keys, token, repr(now), SETTLE_MARGIN_S, last, *args
        )
    return int(scored or 0), int(failed or 0)


def count_rows() -> tuple[int, int]:
    """One scrape's counting: the ledgers of the jobs not settled yet are added, under a lock
    so that one scrape at a time counts (another meanwhile shows the totals as they are)."""
    client = _redis()
    token = secrets.token_hex(8)
    if not client.set(LOCK_KEY, token, nx=True, px=LOCK_MS):
        scored, failed = client.hmget(TOTALS_KEY, "scored", "failed")
        return int(scored or 0), int(failed or 0)
    try:
        settled = client.get(SETTLED_KEY)
        if settled is None:
            _adopt_old_gone(client)
        now, ledgers = _ledgers(float(settled) if settled is not None else None)
        totals = add_growth(ledgers, token, now)  # releases the lock
    except BaseException:
        client.eval(RELEASE, 1, LOCK_KEY, token)
        raise
    prune_marks()
    return totals


def _adopt_old_gone(client: redis.Redis) -> None:
    """The jobs the version before this one saw deleted (a hash, once per upgrade): their marks
    go the new way (GONE_KEY), instead of staying for good."""
    old: dict[bytes, bytes] = client.hgetall(OLD_GONE_KEY)  # type: ignore[assignment]
    if old:
        client.zadd(GONE_KEY, {job.decode(): float(since) for job, since in old.items()})
    client.delete(OLD_GONE_KEY)


def prune_marks() -> None:
    """Forgets the marks of jobs a DELETE counted, a while after (a scrape that read the job's
    ledger before its delete may still be on its way to Redis, and without the mark it would
    count the job again), once the job is gone (a DELETE refused leaves it). At most
    PRUNE_BATCH a scrape: the work follows the deletes, not the jobs kept."""
    client = _redis()
    seconds, _ = client.time()
    due = [
        k.decode() if isinstance(k, bytes) else str(k)
        for k in client.zrangebyscore(GONE_KEY, "-inf", seconds - GONE_GRACE_S, 0, PRUNE_BATCH)
    ]
    if not due:
        return
    with session_scope(readonly=True) as session:
        alive = set(
            session.scalars(select(Job.id).where(Job.id.in_(due), Job.deleted_at.is_(None)))
        )
    gone = [job_id for job_id in due if job_id not in alive]
    if gone:
        client.hdel(COUNTED_KEY, *gone)
    client.zrem(GONE_KEY, *due)


def count_rows_before_delete(job_id: str) -> None:
    # Best effort: a failure here must not stop the delete itself.
    try:
        _, ledgers = _ledgers(None, job_id)
        add_growth(ledgers)
        client = _redis()
        seconds, _ = client.time()
        client.zadd(GONE_KEY, {job_id: seconds})
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


class EventCounters(Collector):
    """Rare events counted in Redis where they happen (core/event_counts.py)."""

    HELP = {
        event_counts.CHUNKS_GIVEN_UP: "Chunks whose attempts ran out (their rows failed)",
        event_counts.WEBHOOK_ATTEMPTS_FAILED: "Webhook POSTs answered non-2xx or not at all",
        event_counts.SINGLES_BATCHES_LATE: (
            "POST /v1/score batches a worker took after the API stopped waiting (not scored)"
        ),
    }

    def __init__(self, values: dict[str, int]) -> None:
        self.values = values

    def collect(self) -> Iterator[Metric]:
        for name, value in self.values.items():
            yield CounterMetricFamily(f"reviewscore_{name}", self.HELP[name], value=value)


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
    past_deadline = Gauge(
        "reviewscore_jobs_past_deadline",
        "Unfinished jobs whose deadline has passed (the sweeper ends them expired)",
        registry=registry,
    )
    with session_scope(readonly=True) as session:
        for status, count in session.execute(select(Job.status, func.count()).group_by(Job.status)):
            jobs_by_status.labels(status).set(count)
        past_deadline.set(
            session.execute(
                select(func.count()).where(Job.status.in_(UNFINISHED), Job.deadline_at < db_now())
            ).scalar_one()
        )
        installed = list_models(session)
    try:
        registry.register(RowCounters(*count_rows()))
        registry.register(EventCounters(event_counts.read(_redis())))
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
            processes.labels(report.state).inc()
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
