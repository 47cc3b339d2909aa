"""Counts of rare events the operator's alerts watch (deploy/prometheus/alerts.yml): chunks
given up, webhook attempts that failed, single-review batches a worker took too late. Each is one field of a Redis hash, added to where the
event happens and read by /metrics as a counter: the database keeps no such history (a given-up
chunk is only its rows' errors; a failed attempt only its ledger row, gone with its job), and a
counter must never fall when jobs are deleted. Best effort: Redis away, the event still happens
and only its count is lost (logged)."""

from __future__ import annotations

import logging
import os

import redis

from reviewscore.core import redis_keys
from reviewscore.core.replies import redis_url
from reviewscore.core.settings import get_settings

log = logging.getLogger(__name__)

KEY = redis_keys.METRICS_EVENTS
CHUNKS_GIVEN_UP = "chunks_given_up"
WEBHOOK_ATTEMPTS_FAILED = "webhook_deliveries_failed"
SINGLES_BATCHES_LATE = "singles_batches_late"
NAMES = (CHUNKS_GIVEN_UP, WEBHOOK_ATTEMPTS_FAILED, SINGLES_BATCHES_LATE)

_client: tuple[int, str, redis.Redis] | None = None


def _redis() -> redis.Redis:
    # One client per process and broker, made after fork (a pool process must not share its
    # parent's socket); short timeouts, so a hung Redis never holds up a claim or a send.
    global _client
    url = redis_url(get_settings().broker_url)
    if _client is None or _client[:2] != (os.getpid(), url):
        _client = (os.getpid(), url, redis.Redis.from_url(url, socket_timeout=2))
    return _client[2]


def count(name: str) -> None:
    try:
        _redis().hincrby(KEY, name, 1)
    except Exception:  # noqa: BLE001 - a count is not worth failing the work it counts
        log.warning("could not count %s in Redis", name, exc_info=True)


def read(client: redis.Redis) -> dict[str, int]:
    """Every count, 0 for those that never happened."""
    found = client.hgetall(KEY)
    return {name: int(found.get(name.encode(), 0)) for name in NAMES}
