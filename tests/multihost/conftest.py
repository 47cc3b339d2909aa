"""The hosts of the multi-host suite, made once per module: a data host (PostgreSQL and Redis, with
passwords), an API host (API and beat) and two worker hosts, each a network namespace (see
harness.py). Each test first heals what an earlier test broke (a cut link, a killed host, a
stopped server), so the cases share one set of hosts and stay independent."""

from __future__ import annotations

import csv
import gzip
import io
import random
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from reviewscore.testing.faults import worker_env
from tests.conftest import IMDB_DIR
from tests.multihost.harness import (
    API_PORT,
    Cluster,
    Host,
    HostsUnavailable,
    Postgres,
    Redis,
    Service,
    iter_logs,
    wait_until,
)

CHUNK_SIZE = 200
LEASE_S = 20.0
SWEEP_S = 3.0
# A fault switch (hold_marker, reviewscore.testing.faults): a text holding HOLD + "score" or
# HOLD + "commit" stops its chunk's first attempt while scoring, or inside its completion
# transaction.
HOLD = "\u23f8HOLD\u23f8"
# Each chunk takes this much longer to score (the fault switch score_delay_s), as a slower
# model would: a 4,000-row job then lasts several seconds on two workers, so faults land mid-job.
SCORE_DELAY_S = 0.5
BASE_WORKERS = ("w1", "w2")

SERVICE_ENV = {
    "REVIEWSCORE_CHUNK_SIZE": str(CHUNK_SIZE),
    "REVIEWSCORE_CHUNK_LEASE_S": str(LEASE_S),
    "REVIEWSCORE_SWEEP_INTERVAL_S": str(SWEEP_S),
    "REVIEWSCORE_QUEUED_GRACE_S": "10",
    "REVIEWSCORE_TF_THREADS": "1",
    **worker_env(score_delay_s=SCORE_DELAY_S, hold_marker=HOLD),
}


def host_of(claimant: str) -> str:
    """The host in a worker process's name, "<node>@<host>:<pid>" (what chunks.claimed_by and
    the /readyz reports hold)."""
    return claimant.rsplit(":", 1)[0].rsplit("@", 1)[-1]


class Reviews:
    """Real IMDB reviews (test and train splits, shuffled), handed out without repeats so no
    job is served from another's scores."""

    def __init__(self) -> None:
        rows: list[dict[str, str]] = []
        for split in ("test", "train"):
            with gzip.open(IMDB_DIR / f"{split}.csv.gz", "rt", encoding="utf-8") as f:
                rows += [{"text": r["text"]} for r in csv.DictReader(f)]
        random.Random(1010).shuffle(rows)
        self.rows = rows
        self.used = 0
        self.lock = threading.Lock()

    def take(self, n: int, prefix: str) -> list[dict[str, str]]:
        with self.lock:
            part = self.rows[self.used : self.used + n]
            self.used += n
        assert len(part) == n, "out of distinct reviews"
        return [{"id": f"{prefix}-{i + 1}", "text": r["text"]} for i, r in enumerate(part)]


def csv_body(rows: list[dict[str, str]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["id", "text"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


@dataclass
class Seen:
    """Every HTTP answer the tests got, so a 500 anywhere is counted."""

    statuses: list[tuple[str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, response: httpx.Response) -> None:
        with self.lock:
            self.statuses.append(
                (f"{response.request.method} {response.request.url.path}", response.status_code)
            )

    def count(self, status: int, since: int = 0) -> int:
        with self.lock:
            return sum(1 for _, s in self.statuses[since:] if s == status)

    def mark(self) -> int:
        with self.lock:
            return len(self.statuses)

    def examples(self, status: int, since: int = 0) -> list[str]:
        with self.lock:
            return sorted({w for w, s in self.statuses[since:] if s == status})


@dataclass
class Hosts:
    cluster: Cluster
    data: Host
    api: Host
    pg: Postgres
    redis: Redis
    service: Service
    reviews: Reviews
    seen: Seen = field(default_factory=Seen)
    # What each worker host runs now: "normal", or the name of a test's variant.
    variants: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.api.address}:{API_PORT}"

    def worker(self, name: str) -> Host:
        return self.cluster.hosts.get(name) or self.cluster.add_host(name)

    def http(self, timeout: float = 60.0) -> httpx.Client:
        """A client whose every answer is recorded (for the count of 500s)."""
        return httpx.Client(
            base_url=self.url, timeout=timeout, event_hooks={"response": [self.seen.record]}
        )

    def engine(self, admin: bool = False) -> Engine:
        # No pool: the tests' connections must not outlive a PostgreSQL restart.
        return create_engine(self.pg.admin_url if admin else self.pg.url, poolclass=NullPool)

    def sql(self, query: str, admin: bool = False, **params: Any) -> list[Any]:
        engine = self.engine(admin)
        try:
            with engine.connect() as conn:
                return list(conn.execute(text(query), params).all())
        finally:
            engine.dispose()

    # --- the state of the workers -------------------------------------------------------------
    def reported(self) -> dict[str, dict[str, Any]]:
        """What each worker process reported to Redis ("host:pid" -> state)."""
        import json

        client = self.redis.client()
        keys = list(client.scan_iter(match="reviewscore:worker:*"))
        values = client.mget(keys) if keys else []
        return {
            k.decode().removeprefix("reviewscore:worker:"): json.loads(v)
            for k, v in zip(keys, values, strict=True)
            if v is not None
        }

    def worker_ready(self, host: Host) -> bool:
        """Its worker runs, and a live pool process of it loaded its model and said so."""
        proc = host.procs.get("worker")
        if proc is None or not proc.alive():
            return False
        live = host.pids()
        return any(
            host_of(name) == host.name
            and int(name.rsplit(":", 1)[1]) in live
            and state.get("device")
            and not state.get("error")
            for name, state in self.reported().items()
        )

    def start_worker(self, name: str, variant: str = "normal", **kwargs: Any) -> Host:
        host = self.worker(name)
        host.stop("worker")
        self.service.start_worker(host, **kwargs)
        self.variants[name] = variant
        return host

    def wait_worker(self, host: Host, timeout: float = 240) -> None:
        def ready() -> bool:
            proc = host.procs.get("worker")
            if proc is not None and not proc.alive():
                raise AssertionError(f"the worker of {host.name} exited:\n{proc.log()[-3000:]}")
            return self.worker_ready(host)

        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise AssertionError(f"the worker of {host.name} is not ready after {timeout}s")
            time.sleep(0.5)

    def busy_workers(self) -> dict[str, list[str]]:
        """Worker nodes with a task in progress (a previous case's held chunk, say), as the
        workers themselves answer Celery's `inspect active`."""
        from reviewscore.core.celery_app import make_celery
        from reviewscore.core.settings import Settings

        app = make_celery(Settings(redis_url=self.redis.url, database_url="sqlite://"))
        try:
            active = app.control.inspect(timeout=2.0).active() or {}
        finally:
            app.close()
        return {node: [t["name"] for t in tasks] for node, tasks in active.items() if tasks}

    def ping_names(self) -> set[str]:
        with self.http(timeout=20) as http:
            return set(http.get("/readyz").json().get("workers", []))

    # --- healing --------------------------------------------------------------------------------
    def heal(self) -> None:
        """Puts back what an earlier test broke: links up, servers and processes running, the
        base workers in their normal configuration and answering."""
        for host in self.cluster.hosts.values():
            if host.is_cut():
                host.restore()
        if not _alive(self.data, "postgres"):
            self.pg.start()
        if not _alive(self.data, "redis"):
            self.redis.start()
        wait_until("PostgreSQL", self.pg.answers, 60)
        wait_until("Redis", self.redis.answers, 60)
        if not (_alive(self.api, "api") and _alive(self.api, "beat")):
            self.service.start_api(self.api)
        for name in list(self.variants):
            if name not in BASE_WORKERS and _alive(self.worker(name), "worker"):
                self.worker(name).stop("worker")
                del self.variants[name]
        for name in BASE_WORKERS:
            host = self.worker(name)
            if self.variants.get(name) != "normal" or not _alive(host, "worker"):
                self.start_worker(name)
        wait_until("the API", lambda: httpx.get(self.url + "/healthz", timeout=2).is_success, 60)
        for name in BASE_WORKERS:
            self.wait_worker(self.worker(name))
        expected = {f"{name}@{name}" for name in BASE_WORKERS}
        wait_until("every base worker answering pings", lambda: expected <= self.ping_names(), 120)
        # A host cut in the previous case may still be inside its held chunk: wait it out, so
        # this case starts with every worker free.
        wait_until("every worker idle", lambda: not self.busy_workers(), 120, interval=1.0)

    def log_tails(self, chars: int = 2500) -> str:
        return "\n".join(
            f"== {name}\n{proc.log()[-chars:]}" for name, proc in iter_logs(self.cluster.hosts)
        )


def _alive(host: Host, name: str) -> bool:
    proc = host.procs.get(name)
    return proc is not None and proc.alive()


@pytest.fixture(scope="module")
def hosts(models_dir: Path) -> Iterator[Hosts]:
    try:
        cluster = Cluster()
    except HostsUnavailable as exc:
        pytest.skip(f"MULTI-HOST SUITE NOT RUN: {exc}")
    try:
        data, api = cluster.add_host("data"), cluster.add_host("api")
        pg = Postgres(data, secrets.token_hex(12), secrets.token_hex(12))
        pg.init(str(cluster.subnet))
        pg.start()
        wait_until("PostgreSQL on the data host", pg.answers, 60)
        pg.create_database()
        redis = Redis(data, secrets.token_hex(12))
        redis.start()
        wait_until("Redis on the data host", redis.answers, 60)
        service = Service(pg.url, redis.url, api.address, SERVICE_ENV)
        # Once, from the root namespace: migrations, then the models into the registry.
        service.cli("db", "upgrade")
        service.cli("models", "publish", str(models_dir))
        running = Hosts(cluster, data, api, pg, redis, service, Reviews())
        service.start_api(api)
        for name in BASE_WORKERS:
            running.start_worker(name)
        running.heal()
    except BaseException:
        print("\n".join(f"== {n}\n{p.log()[-3000:]}" for n, p in iter_logs(cluster.hosts)))
        cluster.teardown()
        raise
    try:
        yield running
    finally:
        cluster.teardown()
