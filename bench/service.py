"""A whole stack for the benchmark (embedded Redis, API, worker nodes, beat) on its own temp dir
and SQLite file, and the job timing every bulk-like row uses."""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.config import Config
from bench.phases import phase_summary
from bench.results import JobRun
from reviewscore.client import Client
from reviewscore.core.settings import Settings
from reviewscore.shell.runner import Stack


def log(message: str) -> None:
    print(f"[{dt.datetime.now(dt.UTC):%H:%M:%S}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Service:
    name: str
    stack: Stack
    settings: Settings
    client: Client
    url: str
    started_s: float

    def processes(self, kind: str) -> list[psutil.Process]:
        """The API process, or every worker node with its pool processes."""
        procs = []
        for name, child in list(self.stack.children.items()):
            if (kind == "api" and name == "api") or (kind == "worker" and "worker" in name):
                try:
                    parent = psutil.Process(child.process.pid)
                    procs += [parent, *parent.children(recursive=True)]
                except psutil.NoSuchProcess:
                    pass
        if kind == "redis" and self.stack.redis is not None and self.stack.redis.process:
            procs.append(psutil.Process(self.stack.redis.process.pid))
        return procs

    def cache_size(self) -> int:
        from sqlalchemy import func, select

        from reviewscore.core.db import make_engine
        from reviewscore.core.schema import ScoreCache

        engine = make_engine(self.settings.database_url, for_writes=False)
        try:
            with engine.connect() as conn:
                return int(conn.execute(select(func.count()).select_from(ScoreCache)).scalar_one())
        finally:
            engine.dispose()

    def timed_job(self, path: Path, timeout: float = 3600, count_computed: bool = False) -> JobRun:
        """Upload a CSV and wait: seconds from the upload's first byte to the job's final status,
        with the worker's phase times for this job."""
        cache_before = self.cache_size() if count_computed else 0
        started = time.perf_counter()
        job = self.client.upload(path)
        uploaded = time.perf_counter() - started
        final = self.client.wait(job["id"], poll=0.1, timeout=timeout)
        seconds = time.perf_counter() - started
        if final["status"] != "succeeded" or final["failed"]:
            raise RuntimeError(f"job {final['id']} ended {final['status']}: {final}")
        return JobRun(
            job_id=final["id"],
            rows=final["total"],
            seconds=seconds,
            upload_seconds=uploaded,
            computed=self.cache_size() - cache_before if count_computed else None,
            phases=phase_summary(self.stack.log_dir, final["id"], final["total"], seconds),
        )


def wait_models_loaded(stack: Stack, processes: int, timeout: float) -> None:
    """Readiness comes from the worker's main process; each pool process loads its model after.
    Waiting for them keeps the model load out of the first measurement."""

    def loaded() -> int:
        logs = [*stack.log_dir.glob("worker*.log"), *stack.log_dir.glob("singles.log")]
        return sum(p.read_text(errors="replace").count("loaded model") for p in logs)

    stack.wait_until("models in every pool process", lambda: loaded() >= processes, timeout)


@contextmanager
def running_service(
    cfg: Config,
    model: str,
    name: str,
    *,
    workers: int = 1,
    concurrency: int | None = None,
    env: dict[str, str] | None = None,
    singles_worker: bool = False,
    flower: bool = False,
) -> Iterator[Service]:
    from reviewscore.core.migrate import upgrade
    from reviewscore.core.model_registry import publish_folder

    # None: the product's default (one pool process per core).
    concurrency = concurrency or Settings().worker_processes
    var_dir = Path(tempfile.mkdtemp(prefix=f"reviewscore-bench-{name}-"))
    database_url = f"sqlite:///{var_dir / 'reviewscore.db'}"
    port = free_port()
    full_env = {
        "REVIEWSCORE_API_PORT": str(port),
        "REVIEWSCORE_DEFAULT_MODEL": model,
        "REVIEWSCORE_CHUNK_SIZE": str(cfg.chunk_size),
        "REVIEWSCORE_SCORE_BATCH_SIZE": str(cfg.score_batch_size),
        "REVIEWSCORE_WORKER_CONCURRENCY": str(concurrency),
        "REVIEWSCORE_SINGLES_TIMEOUT_S": "120",
        **(env or {}),
    }
    settings = Settings(
        var_dir=var_dir,
        database_url=database_url,
        models_dir=cfg.models_dir,
        api_port=port,
        flower_port=free_port(),
        redis_url="",
        default_model=model,
        worker_concurrency=concurrency,
    )
    stack = Stack(settings, extra_env=full_env)
    try:
        upgrade(database_url)
        publish_folder(cfg.models_dir, database_url)  # as `make run` does: workers load from it
        started = time.perf_counter()
        stack.start(flower=flower, beat=True, workers=workers, singles_worker=singles_worker)
        stack.wait_ready(timeout=300)
        wait_models_loaded(stack, workers * concurrency + int(singles_worker), timeout=300)
        url = f"http://127.0.0.1:{port}"
        elapsed = time.perf_counter() - started
        log(f"stack {name} ready in {elapsed:.0f}s ({workers} node(s) x {concurrency})")
        yield Service(name, stack, settings, Client(url), url, elapsed)
    finally:
        stack.stop()
        shutil.rmtree(var_dir, ignore_errors=True)
