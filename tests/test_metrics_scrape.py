"""/metrics in-process, on real SQLite and PostgreSQL and a real Redis: a scrape reads what
changed since the last one (running jobs, jobs just finished), never every job kept, and still
counts every row once; REVIEWSCORE_METRICS_TOKEN protects it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, update

from api import metrics
from reviewscore.core import jobs
from reviewscore.core.clock import db_now_plus
from reviewscore.core.db import get_engine, get_read_engine, single_statement
from reviewscore.core.schema import Job
from reviewscore.core.settings import get_settings
from reviewscore.shell.redis_server import EmbeddedRedis
from tests import factories as f

KEPT_JOBS = 60


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("metrics-redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(
    database: str, redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    monkeypatch.setenv("REVIEWSCORE_REDIS_URL", redis_server.url)
    get_settings.cache_clear()
    metrics._redis.cache_clear()
    client = redis_server.client()
    client.flushall()
    client.config_set("slowlog-log-slower-than", 0)  # every command, with its arguments
    client.config_set("slowlog-max-len", 10_000)
    yield client
    metrics._redis.cache_clear()


@dataclass
class Scrape:
    page: str
    redis_commands: list[str]  # every command the scrape ran in Redis (its Lua's too)
    redis_arguments: int  # their arguments, summed: the work Redis did (and was blocked by)
    rows_read: int  # rows the database sent back (PostgreSQL; SQLite does not count them)

    def rows(self) -> tuple[float, float]:
        found = dict(
            re.findall(r'^reviewscore_rows_total\{outcome="(\w+)"\} (\S+)$', self.page, re.M)
        )
        return float(found["scored"]), float(found["failed"])

    def cost(self) -> tuple[int, int, int]:
        return len(self.redis_commands), self.redis_arguments, self.rows_read


def scrape(redis_client: Any) -> Scrape:
    read = [0]

    def count(_conn: Any, cursor: Any, *_: Any) -> None:
        if cursor.description is not None and cursor.rowcount > 0:
            read[0] += cursor.rowcount

    engines = {get_engine(), get_read_engine()}
    for engine in engines:
        event.listen(engine, "after_cursor_execute", count)
    redis_client.slowlog_reset()
    try:
        page = metrics.render()[0].decode()
    finally:
        for engine in engines:
            event.remove(engine, "after_cursor_execute", count)
    # Raw entries: [id, time, duration, [command, arguments...], ...].
    log = redis_client.execute_command("SLOWLOG", "GET", 10_000)
    commands = [entry[3] for entry in log if entry[3][0].upper() != b"SLOWLOG"]
    return Scrape(
        page, [c[0].decode().upper() for c in commands], sum(len(c) - 1 for c in commands), read[0]
    )


def finished_an_hour_ago(*job_ids: str) -> None:
    with single_statement() as conn:
        conn.execute(update(Job).where(Job.id.in_(job_ids)).values(finished_at=db_now_plus(-3600)))


def kept_jobs(n: int) -> list[str]:
    """n finished jobs of 2 scored rows each, finished an hour ago."""
    kept = [f.make_job(2, 1) for _ in range(n)]
    for job_id in kept:
        assert f.score(job_id, 0) and f.score(job_id, 1)
    finished_an_hour_ago(*kept)
    return kept


def test_a_scrape_costs_the_same_with_60_finished_jobs_kept_as_with_5(redis_client: Any) -> None:
    kept = kept_jobs(5)
    running = f.make_job(4, 1, errors={4: "empty text"})
    assert f.score(running, 0)
    assert scrape(redis_client).rows() == (11, 0)  # a first scrape reads every job, once
    assert f.score(running, 1)
    few = scrape(redis_client)
    assert few.rows() == (12, 0)

    kept += kept_jobs(KEPT_JOBS - 5)
    redis_client.flushall()  # Redis starts over: its first scrape reads every job again
    assert scrape(redis_client).rows() == (2 * KEPT_JOBS + 2, 0)
    assert f.score(running, 2)
    many = scrape(redis_client)
    assert many.rows() == (2 * KEPT_JOBS + 3, 0)
    # The same commands, arguments and rows read: the one running job's, whatever is kept.
    assert "HKEYS" not in many.redis_commands
    assert many.cost() == few.cost(), (few.redis_commands, many.redis_commands)
    assert redis_client.hlen(metrics.COUNTED_KEY) == 1  # no mark kept for a settled job

    # The running job finishes, a new one finishes: counted once each, and then settled.
    assert f.score(running, 3)
    quick = f.make_job(1, 1)
    assert f.score(quick, 0)
    done = scrape(redis_client)
    assert done.rows() == (2 * KEPT_JOBS + 4, 1)
    assert scrape(redis_client).rows() == done.rows()

    # A deleted job's rows stay counted (the DELETE counts it first), and never count twice.
    metrics.count_rows_before_delete(kept[0])
    jobs.delete_job(kept[0])
    metrics.count_rows_before_delete(running)
    jobs.delete_job(running)
    assert scrape(redis_client).rows() == done.rows()


def test_metrics_need_the_token_once_one_is_set(
    redis_client: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from api.main import create_app

    monkeypatch.setenv("REVIEWSCORE_METRICS_TOKEN", "scrape-secret")
    get_settings.cache_clear()
    with TestClient(create_app()) as http:
        refused = http.get("/metrics")
        assert refused.status_code == 401
        assert "REVIEWSCORE_METRICS_TOKEN" in refused.json()["detail"]
        wrong = http.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        page = http.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
        assert page.status_code == 200 and "reviewscore_rows_total" in page.text


def test_marks_left_by_the_version_before_for_deleted_jobs_go(redis_client: Any) -> None:
    alive = f.make_job(2, 1)
    assert f.score(alive, 0) and f.score(alive, 1)
    finished_an_hour_ago(alive)
    seconds, _ = redis_client.time()
    # What the previous version kept: a mark per job, and when it saw deleted ones go.
    redis_client.hset(metrics.COUNTED_KEY, mapping={alive: "2:0", "d" * 32: "7:1"})
    redis_client.hset(metrics.OLD_GONE_KEY, "d" * 32, seconds - 3600)
    redis_client.hset(metrics.TOTALS_KEY, mapping={"scored": 9, "failed": 1})
    page = scrape(redis_client)
    assert page.rows() == (9, 1)  # nothing counted twice
    assert redis_client.hkeys(metrics.COUNTED_KEY) == []  # the job's settled, the other gone
    assert not redis_client.exists(metrics.OLD_GONE_KEY)


def test_the_alerts_counters_chunks_given_up_and_jobs_past_deadline(redis_client: Any) -> None:
    page = scrape(redis_client).page
    assert "reviewscore_chunks_given_up_total 0.0" in page
    assert "reviewscore_webhook_deliveries_failed_total 0.0" in page
    assert "reviewscore_jobs_past_deadline 0.0" in page
    job_id = f.make_job(2, 1)
    assert f.claim(job_id, 0, lease_s=0, max_attempts=1) is not None  # its worker vanishes
    assert f.claim(job_id, 0, lease_s=0, max_attempts=1) is None  # attempts ran out
    with single_statement() as conn:
        conn.execute(update(Job).where(Job.id == job_id).values(deadline_at=db_now_plus(-1)))
    page = scrape(redis_client).page
    assert "reviewscore_chunks_given_up_total 1.0" in page
    assert "reviewscore_jobs_past_deadline 1.0" in page
