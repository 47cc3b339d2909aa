"""A database or Redis that goes away (the fast layer; tests/multihost restarts the real servers):
an upload the outage breaks answers a JSON 503 naming the database and the job id, and the job
is closed, failed with its stored rows kept, as soon as the database answers again; other
requests answer a JSON 503 naming the part that is away, never a 500."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from api import uploads as api_uploads
from api.main import create_app
from reviewscore.core import uploads
from reviewscore.core.db import session_scope
from reviewscore.core.jobs import get_job
from tests.conftest import wait_for

pytestmark = pytest.mark.usefixtures("database")
REVIEWS = "id,text\n" + "".join(f"r{i},review number {i} is fine\n" for i in range(1, 11))


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("REVIEWSCORE_CHUNK_SIZE", "4")
    monkeypatch.setattr(api_uploads, "enqueue_chunk", lambda job, seq: None)
    from reviewscore.core.settings import get_settings

    get_settings.cache_clear()
    with TestClient(create_app()) as client:
        yield client
    get_settings.cache_clear()


def test_an_outage_mid_upload_answers_503_with_the_job_and_closes_it_once_the_database_is_back(
    api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    flush = uploads.ChunkWriter.flush
    outage = {"chunks_stored": 0, "down_until": 0.0}

    def flaky_flush(self: uploads.ChunkWriter) -> None:
        # The first chunk is stored; then the database is away for a moment (refused
        # connections, as during a restart), for the upload and for the first closing tries.
        if outage["chunks_stored"] >= 1 and (self.buffer or self.records):
            outage["down_until"] = time.monotonic() + 1.0
            raise OperationalError("INSERT", {}, ConnectionRefusedError("connection refused"))
        flush(self)
        outage["chunks_stored"] += 1

    close = uploads._close

    def close_when_up(job_id: str, error: str | None = None) -> int:
        if time.monotonic() < outage["down_until"]:
            raise OperationalError("UPDATE", {}, ConnectionRefusedError("connection refused"))
        return close(job_id, error)

    monkeypatch.setattr(uploads.ChunkWriter, "flush", flaky_flush)
    monkeypatch.setattr(uploads, "_close", close_when_up)
    response = api.post(
        "/v1/jobs", params={"id_column": "id"}, files={"file": ("r.csv", REVIEWS, "text/csv")}
    )
    assert response.status_code == 503, response.text
    detail = response.json()["detail"]
    assert detail.startswith("the database became unavailable during the upload"), detail
    assert "kept the 4 rows" in detail
    job_id = detail.split("job ", 1)[1].split(":", 1)[0]

    def closed() -> bool:
        with session_scope(readonly=True) as session:
            return get_job(session, job_id).upload_finished_at is not None

    wait_for(closed, 30, "the upload to be closed once the database is back")
    view = api.get(f"/v1/jobs/{job_id}").json()
    assert (view["total"], view["received"]) == (4, 4)
    assert view["error"].startswith("upload interrupted: the database became unavailable")


def test_a_database_error_elsewhere_is_a_503_naming_the_database(
    api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from api.routes import jobs as job_routes

    def away(*_: object, **__: object) -> None:
        raise OperationalError("SELECT", {}, ConnectionRefusedError("connection refused"))

    monkeypatch.setattr(job_routes.jobs, "list_jobs", away)
    response = api.get("/v1/jobs")
    assert response.status_code == 503
    assert response.json()["detail"].startswith("the database is unavailable")


def test_a_single_review_the_task_queue_does_not_take_is_a_503(
    api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis.asyncio
    from redis.exceptions import ConnectionError as RedisConnectionError

    async def broken_push(*_: object, **__: object) -> None:
        # Redis restarting: the singles message is not taken.
        raise RedisConnectionError("Connection reset by peer")

    monkeypatch.setattr(redis.asyncio.Redis, "lpush", broken_push)
    response = api.post("/v1/score", json={"reviews": ["A fine film."]})
    assert response.status_code == 503
    assert response.json()["detail"].startswith(
        "Redis (the task queue) is unavailable (cannot be reached: ConnectionError"
    )
    assert response.headers["retry-after"] == "5"


def test_a_copy_the_server_refuses_answers_503_naming_the_database(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL refuses the COPY of an upload's rows (here a lock timeout; in the chaos soak a
    full disk): the upload answers a JSON 503 naming the database, as for any other statement,
    never a 500. The COPY runs on the driver's own cursor, whose errors SQLAlchemy does not see."""
    if not database.startswith("postgresql"):
        pytest.skip("COPY is PostgreSQL's (SQLite stores rows by INSERT)")
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from tests.conftest import _reset_cached_settings_and_engines

    url = make_url(database).update_query_dict({"options": "-c lock_timeout=300"})
    monkeypatch.setenv("REVIEWSCORE_DATABASE_URL", url.render_as_string(hide_password=False))
    monkeypatch.setenv("REVIEWSCORE_CHUNK_SIZE", "4")
    # The API stores the rows itself (the worker's COPY of a chunk's rows is the same call).
    monkeypatch.setenv("REVIEWSCORE_INGEST_PARSE", "api")
    monkeypatch.setattr(api_uploads, "enqueue_chunk", lambda job, seq: None)
    _reset_cached_settings_and_engines()
    # Another session holds a lock that lets readers through but not writers: only the COPY
    # into input_rows waits, and gives up after lock_timeout.
    locker = create_engine(database)
    # The lock goes (the contexts exit in reverse) before the app stops: nothing waits for it.
    with TestClient(create_app()) as client, locker.connect() as conn, conn.begin():
        conn.execute(text("LOCK TABLE input_rows IN SHARE MODE"))
        response = client.post(
            "/v1/jobs", params={"id_column": "id"}, files={"file": ("r.csv", REVIEWS, "text/csv")}
        )
    locker.dispose()
    assert response.status_code == 503, response.text
    detail = response.json()["detail"]
    assert detail.startswith("the database became unavailable during the upload"), detail
    # The upload's close is retried from a thread (uploads.close_when_database_is_back) until
    # the database answers: waited for here, or the thread outlives this test and closes a job
    # against the next test's database (seen in a full make test: the next test's engine
    # cached for another URL, "no such table").
    job_id = detail.split("job ", 1)[1].split(":", 1)[0]

    def closed() -> bool:
        with session_scope(readonly=True) as session:
            return get_job(session, job_id).upload_finished_at is not None

    wait_for(closed, 30, "the upload to be closed once the lock is gone")
