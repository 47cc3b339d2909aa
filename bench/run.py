"""Measures reviewscore side by side in one run: the model's in-process limit, the seed's
one-predict-per-review path, a naive task per review, bulk CSV jobs, singles over HTTP, a big
dump (memory, ingest, dedup, fairness) and 1 vs 2 workers. Run with `make bench`.

Prints a table and writes the same figures to bench/results/<date>-<host>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import gc
import gzip
import json
import os
import platform
import random
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import httpx  # noqa: E402
import psutil  # noqa: E402

from reviewscore.client import Client  # noqa: E402
from reviewscore.core.model_registry import ModelInfo, local_model, local_models  # noqa: E402
from reviewscore.core.settings import Settings  # noqa: E402

IMDB_DIR = REPO_ROOT.parent / "shared" / "data" / "imdb"
RESULTS_DIR = REPO_ROOT / "bench" / "results"
ROWS = ["limit", "seed", "naive", "bulk", "singles", "dedup", "fairness", "big", "scale", "knobs"]


# --- configuration ---------------------------------------------------------------------------


@dataclass
class Config:
    models_dir: Path
    model: str | None
    bulk_rows: int
    big_rows: int
    quick: bool
    skip: set[str]
    limit_reviews: int = 4096
    limit_batch_sizes: tuple[int, ...] = (64, 128, 256, 512, 1024)
    limit_passes: int = 3
    bulk_passes: int = 2
    compare_passes: int = 3
    batch1_calls: int = 200
    seed_reviews: int = 150
    naive_tasks: int = 500
    singles_clients: int = 32
    singles_seconds: float = 15.0
    busy_singles_seconds: float = 10.0
    dedup_rows: int = 5000
    fairness_rows: int = 200
    chunk_size: int = 1000
    score_batch_size: int = 256

    @classmethod
    def parse(cls, argv: list[str] | None = None) -> Config:
        p = argparse.ArgumentParser(description=__doc__)
        p.add_argument("--models-dir", type=Path, default=REPO_ROOT / "models")
        p.add_argument("--model", default=None, help="default: the default installed model")
        p.add_argument("--bulk-rows", type=int, default=20_000)
        p.add_argument("--big-rows", type=int, default=1_000_000)
        p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
        p.add_argument("--skip", nargs="*", default=[], choices=ROWS, help="rows to leave out")
        a = p.parse_args(argv)
        cfg = cls(a.models_dir.resolve(), a.model, a.bulk_rows, a.big_rows, a.quick, set(a.skip))
        if a.quick:
            cfg.bulk_rows, cfg.big_rows = min(a.bulk_rows, 1000), min(a.big_rows, 5000)
            cfg.limit_reviews, cfg.batch1_calls, cfg.seed_reviews = 512, 30, 20
            cfg.limit_passes = 1
            cfg.naive_tasks, cfg.singles_seconds, cfg.busy_singles_seconds = 50, 3.0, 2.0
            cfg.dedup_rows, cfg.fairness_rows, cfg.compare_passes = 500, 50, 2
        return cfg


# --- data ------------------------------------------------------------------------------------


def load_reviews() -> list[str]:
    """Every distinct IMDB review (test and train), shuffled: the files are sorted by label."""
    texts: list[str] = []
    for split in ("test", "train"):
        with gzip.open(IMDB_DIR / f"{split}.csv.gz", "rt", encoding="utf-8", newline="") as f:
            texts.extend(row["text"] for row in csv.DictReader(f))
    unique = list(dict.fromkeys(texts))
    random.Random(2026).shuffle(unique)
    return unique


def distinct_rows(pool: list[str], n: int) -> list[str]:
    """n distinct texts: the pool, then the pool again with a marker (a new text to the cache)."""
    return [
        pool[i % len(pool)] + ("" if i < len(pool) else f" ({i // len(pool)})") for i in range(n)
    ]


@dataclass
class Texts:
    """Disjoint sets, so no measurement is helped by scores another one left in the cache."""

    bulk: list[str]
    fairness_alone: list[str]
    fairness_busy: list[str]
    dedup_unique: list[str]
    dedup_base: list[str]
    dump: list[str]
    any: list[str]

    @classmethod
    def split(cls, pool: list[str], cfg: Config) -> Texts:
        f, d = cfg.fairness_rows, cfg.dedup_rows
        cuts = [f, 2 * f, 2 * f + d, 2 * f + d + d // 10]
        held = pool[: cuts[-1]]
        rest = pool[cuts[-1] :]
        return cls(
            bulk=distinct_rows(rest, cfg.bulk_rows),
            fairness_alone=held[: cuts[0]],
            fairness_busy=held[cuts[0] : cuts[1]],
            dedup_unique=held[cuts[1] : cuts[2]],
            dedup_base=held[cuts[2] : cuts[3]],
            dump=pool[cuts[1] :],  # everything but the fairness jobs' texts
            any=pool,
        )


def write_csv(path: Path, texts: list[str], prefix: str) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text"])
        writer.writerows((f"{prefix}-{i}", t) for i, t in enumerate(texts))
    return path


def write_repeating_csv(path: Path, texts: list[str], rows: int, prefix: str) -> Path:
    """rows lines cycling through texts, each with a unique id (the big dump)."""
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text"])
        for start in range(0, rows, 10_000):
            end = min(rows, start + 10_000)
            writer.writerows((f"{prefix}-{i}", texts[i % len(texts)]) for i in range(start, end))
    return path


# --- small helpers ---------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def ratio(a: float | None, b: float | None) -> float | None:
    return None if not a or not b else a / b


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log(message: str) -> None:
    print(f"[{dt.datetime.now(dt.UTC):%H:%M:%S}] {message}", flush=True)


def machine_info() -> dict[str, Any]:
    import keras
    import tensorflow as tf

    from reviewscore.model.scorer import default_device

    cpu = platform.processor()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "host": socket.gethostname(),
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "device": default_device(),
        "platform": platform.platform(),
        "load_average_at_start": os.getloadavg(),
        "note": "2 cores shared with other engineers' tests and training: figures are noisy; "
        "every row ran in this one run so their ratios hold",
    }


# --- rows 1 and 2: in-process (the model alone, and the seed's predict per review) -------------


def load_model_call(info: ModelInfo) -> tuple[Any, Any]:
    import keras

    import reviewscore.model.layers  # noqa: F401  (custom layers)
    from reviewscore.model.scorer import compile_model_call

    model = keras.saving.load_model(info.path, compile=False)
    return model, compile_model_call(model)


def reviews_per_second(call: Any, texts: list[str], batch_size: int, passes: int) -> float:
    """The best of `passes` timed passes: other load on the machine only ever slows a pass."""
    import tensorflow as tf

    call(tf.constant(texts[:batch_size])).numpy()  # warm this shape's kernels
    best = 0.0
    for _ in range(passes):
        started = time.perf_counter()
        for i in range(0, len(texts), batch_size):
            call(tf.constant(texts[i : i + batch_size])).numpy()
        best = max(best, len(texts) / (time.perf_counter() - started))
    return best


def batch1_latency(call: Any, texts: list[str]) -> dict[str, float]:
    import tensorflow as tf

    call(tf.constant(texts[:1])).numpy()
    times = []
    for text in texts:
        started = time.perf_counter()
        call(tf.constant([text])).numpy()
        times.append(time.perf_counter() - started)
    p50 = statistics.median(times)
    return {"p50_ms": p50 * 1e3, "p99_ms": percentile(times, 99) * 1e3, "one_per_call_rps": 1 / p50}


def scorer_rate(info: ModelInfo, texts: list[str], batch_size: int, passes: int) -> float:
    """What the worker's Scorer.score does per review (model call plus the truncation count)."""
    from reviewscore.model.scorer import load_scorer

    scorer = load_scorer(info, batch_size=batch_size)
    scorer.score(texts[:batch_size])
    best = 0.0
    for _ in range(passes):
        started = time.perf_counter()
        scorer.score(texts)
        best = max(best, len(texts) / (time.perf_counter() - started))
    return best


def measure_limit(cfg: Config, texts: Texts, default: ModelInfo) -> dict[str, Any]:
    sample = texts.any[: cfg.limit_reviews]
    out: dict[str, Any] = {"default_model": default.name, "models": {}}
    for info in local_models(cfg.models_dir):
        log(f"limit: {info.name}")
        model, call = load_model_call(info)
        by_batch = {
            bs: reviews_per_second(call, sample, bs, cfg.limit_passes)
            for bs in cfg.limit_batch_sizes
        }
        best = max(by_batch, key=lambda bs: by_batch[bs])
        out["models"][info.name] = {
            "version": info.version,
            "test_accuracy": info.test_accuracy,
            "reviews_per_s_by_batch": by_batch,
            "best_batch": best,
            "reviews_per_s": by_batch[best],
            "scorer_reviews_per_s_at_worker_batch": scorer_rate(
                info, sample, cfg.score_batch_size, cfg.limit_passes
            ),
            "batch1": batch1_latency(call, texts.any[: cfg.batch1_calls]),
        }
        del model, call
        gc.collect()
    out["reviews_per_s"] = out["models"][default.name]["reviews_per_s"]
    out["batch1"] = out["models"][default.name]["batch1"]
    return out


def recheck_limit(cfg: Config, texts: Texts, default: ModelInfo, limit: dict[str, Any]) -> None:
    """The default model's best batch again after the stacks: the ratios use the better of the
    two, so load from other jobs on the machine at one moment does not flatter the service."""
    model, call = load_model_call(default)
    batch = limit["models"][default.name]["best_batch"]
    sample = texts.any[: cfg.limit_reviews]
    limit["recheck_reviews_per_s"] = reviews_per_second(call, sample, batch, cfg.limit_passes)
    limit["reviews_per_s_at_start"] = limit["reviews_per_s"]
    limit["reviews_per_s"] = max(limit["reviews_per_s"], limit["recheck_reviews_per_s"])
    del model, call
    gc.collect()


def measure_seed(cfg: Config, texts: Texts, info: ModelInfo) -> dict[str, Any]:
    """The seed's Gradio page: one model.predict per review."""
    import numpy as np

    model, _ = load_model_call(info)
    sample = texts.any[: cfg.seed_reviews]
    model.predict(np.array(sample[:1], dtype=object), verbose=0)
    started = time.perf_counter()
    for text in sample:
        model.predict(np.array([text], dtype=object), verbose=0)
    elapsed = time.perf_counter() - started
    del model
    gc.collect()
    return {"reviews": len(sample), "seconds": elapsed, "reviews_per_s": len(sample) / elapsed}


# --- running a stack -------------------------------------------------------------------------


@dataclass
class Service:
    name: str
    stack: Any
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


@contextmanager
def running_service(
    cfg: Config,
    model: str,
    name: str,
    *,
    workers: int = 1,
    concurrency: int | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[Service]:
    """A whole stack (embedded Redis, API, worker(s), beat) on its own temp dir and SQLite file."""
    from reviewscore.core.migrate import upgrade
    from reviewscore.shell.runner import Stack

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
        redis_url="",
        default_model=model,
        worker_concurrency=concurrency,
    )
    stack = Stack(settings, extra_env=full_env)
    try:
        upgrade(database_url)
        started = time.perf_counter()
        stack.start(flower=False, beat=True, workers=workers)
        stack.wait_ready(timeout=300)
        wait_models_loaded(stack, workers * concurrency, timeout=300)
        url = f"http://127.0.0.1:{port}"
        elapsed = time.perf_counter() - started
        log(f"stack {name} ready in {elapsed:.0f}s ({workers} node(s) x {concurrency})")
        yield Service(name, stack, settings, Client(url), url, elapsed)
    finally:
        stack.stop()
        shutil.rmtree(var_dir, ignore_errors=True)


def wait_models_loaded(stack: Any, processes: int, timeout: float) -> None:
    """Readiness comes from the worker's main process; each pool process loads its model after.
    Waiting for them keeps the model load out of the first measurement."""

    def loaded() -> int:
        logs = stack.log_dir.glob("worker*.log")
        return sum(p.read_text(errors="replace").count("loaded model") for p in logs)

    stack.wait_until("models in every pool process", lambda: loaded() >= processes, timeout)


def wait_job(client: Client, job_id: str, timeout: float, interval: float = 0.1) -> Any:
    return client.wait(job_id, poll=interval, timeout=timeout)


def timed_job(service: Service, path: Path, timeout: float = 3600) -> dict[str, Any]:
    """Upload a CSV and wait: seconds from the upload's first byte to the job's final status."""
    started = time.perf_counter()
    job = service.client.upload(path)
    uploaded = time.perf_counter() - started
    final = wait_job(service.client, job["id"], timeout)
    seconds = time.perf_counter() - started
    if final["status"] != "succeeded" or final["failed"]:
        raise RuntimeError(f"job {final['id']} ended {final['status']}: {final}")
    rows = final["total"]
    return {
        "rows": rows,
        "seconds": seconds,
        "upload_seconds": uploaded,
        "ingest_rows_per_s": rows / uploaded,
        "reviews_per_s": rows / seconds,
    }


# --- row 3: a naive Celery task per review -----------------------------------------------------


def measure_naive(cfg: Config, service: Service, texts: Texts) -> dict[str, Any]:
    from reviewscore.core.celery_app import SCORE_TEXTS, SINGLES_QUEUE, make_celery

    app = make_celery(service.settings)
    sample = texts.any[: cfg.naive_tasks]
    try:
        started = time.perf_counter()
        pending = [
            app.send_task(SCORE_TEXTS, args=[[t], None], queue=SINGLES_QUEUE) for t in sample
        ]
        for result in pending:
            result.get(timeout=600)
            result.forget()
        elapsed = time.perf_counter() - started
    finally:
        app.close()
    return {"tasks": len(sample), "seconds": elapsed, "reviews_per_s": len(sample) / elapsed}


# --- row 4: bulk -----------------------------------------------------------------------------


CHUNK_RECORD = "chunk_written "
PHASES = ("claim", "lookup", "score", "write")


def chunk_log(service: Service) -> list[dict[str, float]]:
    """Per-chunk phase times the worker logs: SQL claim, cache lookup, model, SQL write."""
    found = []
    for path in sorted(service.stack.log_dir.glob("worker*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if CHUNK_RECORD not in line:
                continue
            record = json.loads(line.split(CHUNK_RECORD, 1)[1])
            found.append(
                {
                    "rows": record["rows"],
                    "scored": record["scored"],
                    "from_cache": record["cached"],
                    **{p: record[f"{p}_s"] for p in PHASES},
                }
            )
    return found


def phase_summary(chunks: list[dict[str, float]], wall_s: float) -> dict[str, Any]:
    """Seconds per phase summed over chunks, as a share of the worker time, and worker busy %."""
    if not chunks:
        return {}
    totals = {p: sum(c[p] for c in chunks) for p in PHASES}
    busy = sum(totals.values())
    return {
        "chunks": len(chunks),
        "phase_seconds": totals,
        "phase_share": {p: totals[p] / busy for p in PHASES},
        "worker_busy_fraction": busy / wall_s,
        "model_reviews_per_s_in_worker": sum(c["scored"] for c in chunks)
        / max(totals["score"], 1e-9),
    }


def measure_bulk(service: Service, csv_path: Path) -> dict[str, Any]:
    before = len(chunk_log(service))
    out = timed_job(service, csv_path)
    out.update(phase_summary(chunk_log(service)[before:], out["seconds"]))
    return out


def bulk_files(cfg: Config, texts: Texts, tmp: Path, passes: int) -> list[Path]:
    """One CSV per pass; later passes mark each text so none is a cache hit on the same stack."""
    return [
        write_csv(
            tmp / f"bulk-{k}.csv",
            texts.bulk if k == 0 else [f"{t} (pass {k})" for t in texts.bulk],
            f"bulk{k}",
        )
        for k in range(passes)
    ]


def best_of(passes: list[dict[str, Any]]) -> dict[str, Any]:
    """The best pass, as for the limit: other load on the machine only ever slows a pass."""
    best = dict(max(passes, key=lambda p: p["reviews_per_s"]))
    best["passes_reviews_per_s"] = [p["reviews_per_s"] for p in passes]
    return best


def measure_bulk_best(service: Service, files: list[Path]) -> dict[str, Any]:
    return best_of([measure_bulk(service, path) for path in files])


# --- row 5: singles --------------------------------------------------------------------------


async def _singles(url: str, texts: list[str], clients: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        for text in texts[:3]:  # the API creates its batcher on the first request
            (await http.post("/v1/score", json={"reviews": [text]})).raise_for_status()
        deadline = time.perf_counter() + seconds

        async def one_client(seed: int) -> None:
            nonlocal errors
            rng = random.Random(seed)
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                response = await http.post("/v1/score", json={"reviews": [rng.choice(texts)]})
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(one_client(i) for i in range(clients)))
        elapsed = time.perf_counter() - started
    return {
        "clients": clients,
        "seconds": elapsed,
        "requests": len(latencies),
        "errors": errors,
        "reviews_per_s": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
    }


def measure_singles(cfg: Config, service: Service, texts: Texts, seconds: float) -> dict[str, Any]:
    return asyncio.run(_singles(service.url, texts.any[:2000], cfg.singles_clients, seconds))


# --- row 6: the big dump, with dedup and fairness (row 8) measured against it ------------------


class RssSampler(threading.Thread):
    """Samples the summed RSS of process groups every `interval` seconds."""

    def __init__(self, groups: dict[str, Callable[[], list[psutil.Process]]], interval: float):
        super().__init__(daemon=True)
        self.groups = groups
        self.interval = interval
        self.samples: dict[str, list[int]] = {name: [] for name in groups}
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            for name, processes in self.groups.items():
                total = 0
                for p in processes():
                    try:
                        total += p.memory_info().rss
                    except psutil.NoSuchProcess:
                        pass
                self.samples[name].append(total)
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def summary(self, name: str) -> dict[str, float]:
        mb = [s / 1024**2 for s in self.samples[name] if s]
        if not mb:
            return {}
        return {
            "start_mb": mb[0],
            "max_mb": max(mb),
            "end_mb": mb[-1],
            "growth_pct": (mb[-1] - mb[0]) / mb[0] * 100,
            "samples": len(mb),
        }


def find_new_job(client: Client, known: set[str], timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for job in client.jobs(limit=10)["jobs"]:
            if job["id"] not in known:
                return str(job["id"])
        time.sleep(0.2)
    raise TimeoutError("the big dump's job never appeared")


def wait_scoring_started(client: Client, job_id: str, rows: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and client.job(job_id)["done"] < rows:
        time.sleep(0.2)


def measure_dedup(cfg: Config, service: Service, texts: Texts, tmp: Path) -> dict[str, Any]:
    """The same number of rows: all distinct, versus a tenth as many texts each seen 10 times."""
    repeated = [texts.dedup_base[i % len(texts.dedup_base)] for i in range(cfg.dedup_rows)]
    out = {}
    for label, rows in (("distinct", texts.dedup_unique), ("repeated_10x", repeated)):
        before = service.cache_size()
        run = timed_job(service, write_csv(tmp / f"dedup-{label}.csv", rows, label))
        run["computed"] = service.cache_size() - before
        run["from_cache"] = run["rows"] - run["computed"]
        out[label] = run
    out["speedup"] = out["repeated_10x"]["reviews_per_s"] / out["distinct"]["reviews_per_s"]
    return out


def measure_big_dump(
    cfg: Config, service: Service, texts: Texts, tmp: Path, busy_checks: bool
) -> dict[str, Any]:
    path = write_repeating_csv(tmp / "big.csv", texts.dump, cfg.big_rows, "big")
    size_mb = path.stat().st_size / 1024**2
    log(f"big dump: {cfg.big_rows:,} rows, {size_mb:,.0f} MB")
    known = {j["id"] for j in service.client.jobs(limit=200)["jobs"]}
    cache_before = service.cache_size()
    sampler = RssSampler(
        {"api": lambda: service.processes("api"), "worker": lambda: service.processes("worker")},
        interval=0.2,
    )
    upload: dict[str, Any] = {}

    def do_upload() -> None:
        try:
            upload["job"] = service.client.upload(path)
        except Exception as exc:  # noqa: BLE001 - reported after the join
            upload["error"] = exc
        upload["seconds"] = time.perf_counter() - started

    sampler.start()
    started = time.perf_counter()
    uploader = threading.Thread(target=do_upload, daemon=True)
    uploader.start()
    busy: dict[str, Any] = {}
    try:
        job_id = find_new_job(service.client, known)
        if busy_checks:
            busy = measure_busy(cfg, service, texts, tmp, job_id)
        uploader.join()
        if "error" in upload:
            raise upload["error"]
        final = wait_job(service.client, job_id, timeout=6 * 3600, interval=0.5)
    finally:
        sampler.stop()
    seconds = time.perf_counter() - started
    computed = service.cache_size() - cache_before
    path.unlink()
    return {
        "rows": final["total"],
        "csv_mb": size_mb,
        "status": final["status"],
        "upload_seconds": upload["seconds"],
        "ingest_rows_per_s": final["total"] / upload["seconds"],
        "seconds": seconds,
        "reviews_per_s": final["total"] / seconds,
        "computed": computed,
        "from_cache": final["total"] - computed,
        "api_rss": sampler.summary("api"),
        "worker_rss": sampler.summary("worker"),
        "busy": busy,
    }


def measure_busy(
    cfg: Config, service: Service, texts: Texts, tmp: Path, dump_id: str
) -> dict[str, Any]:
    """Row 8 under load: a small job and the singles clients while the dump is being scored."""
    wait_scoring_started(service.client, dump_id, 2 * cfg.chunk_size, timeout=600)
    small = write_csv(tmp / "fair-busy.csv", texts.fairness_busy, "busy")
    out: dict[str, Any] = {"small_job": timed_job(service, small)}
    out["small_job"]["dump_done_at_end"] = service.client.job(dump_id)["done"]
    out["singles"] = measure_singles(cfg, service, texts, cfg.busy_singles_seconds)
    dump = service.client.job(dump_id)
    out["dump_still_running"] = not dump["finished"]
    out["dump_done_after_checks"] = dump["done"]
    return out


# --- row 7 and the knobs: separate stacks ------------------------------------------------------


def compare_stacks(
    cfg: Config, model: str, name: str, variants: dict[str, dict[str, Any]], files: list[Path]
) -> dict[str, Any]:
    """Bulk under several stack shapes, all started at once and measured in turns (pass 1 on
    each, then pass 2 on each...), so a change in the machine's load hits every variant alike."""
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in variants}
    with ExitStack() as stacks:
        services = {
            label: stacks.enter_context(running_service(cfg, model, f"{name}{i}", **shape))
            for i, (label, shape) in enumerate(variants.items())
        }
        labels = list(services)
        for k, path in enumerate(files):
            # A different variant goes first on each pass: no one always follows the same one.
            for label in labels[k % len(labels) :] + labels[: k % len(labels)]:
                runs[label].append(measure_bulk(service=services[label], csv_path=path))
    out = {label: best_of(passes) for label, passes in runs.items()}
    for label, best in out.items():
        log(f"{name} {label}: {best['reviews_per_s']:.0f} reviews/s")
    return out


def measure_scale(cfg: Config, model: str, files: list[Path]) -> dict[str, Any]:
    """One worker process against two: two Celery nodes, or one node with two pool processes
    (each then gets cores / 2 TensorFlow threads)."""
    variants: dict[str, dict[str, Any]] = {
        "1_node_x1": {"concurrency": 1},
        "2_nodes_x1": {"workers": 2, "concurrency": 1},
        "1_node_x2": {"concurrency": 2},
    }
    return compare_stacks(cfg, model, "scale", variants, files)


def measure_knobs(cfg: Config, model: str, files: list[Path]) -> dict[str, Any]:
    """Bulk rate under other chunk sizes, model-batch sizes and TensorFlow threads."""
    settings = [
        {},
        {"REVIEWSCORE_CHUNK_SIZE": "250"},
        {"REVIEWSCORE_CHUNK_SIZE": "4000"},
        {"REVIEWSCORE_SCORE_BATCH_SIZE": "64"},
        {"REVIEWSCORE_SCORE_BATCH_SIZE": "1024"},
        {"REVIEWSCORE_TF_THREADS": "1"},
    ]
    variants = {
        ",".join(f"{k.removeprefix('REVIEWSCORE_').lower()}={v}" for k, v in env.items())
        or "defaults": {"env": env}
        for env in settings
    }
    return compare_stacks(cfg, model, "knobs", variants, files)


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Results:
    meta: dict[str, Any]
    rows: dict[str, Any] = field(default_factory=dict)

    def get(self, *path: str) -> Any:
        node: Any = self.rows
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return node


def run_main_stack(cfg: Config, model: str, texts: Texts, tmp: Path, results: Results) -> None:
    """Rows 3-6 and 8 share one stack (one worker), in an order that keeps caches honest."""
    want = {
        r for r in ("naive", "bulk", "singles", "dedup", "fairness", "big") if r not in cfg.skip
    }
    if not want:
        return
    with running_service(cfg, model, "main") as service:
        results.meta["stack_start_s"] = service.started_s
        if "naive" in want:
            results.rows["naive"] = measure_naive(cfg, service, texts)
            log(f"naive: {results.rows['naive']['reviews_per_s']:.1f} reviews/s")
        if "bulk" in want:
            files = bulk_files(cfg, texts, tmp, cfg.bulk_passes)
            results.rows["bulk"] = measure_bulk_best(service, files)
            log(f"bulk: {results.rows['bulk']['reviews_per_s']:.0f} reviews/s")
        if "singles" in want:
            results.rows["singles"] = measure_singles(cfg, service, texts, cfg.singles_seconds)
            log(f"singles: {results.rows['singles']}")
        if "dedup" in want:
            results.rows["dedup"] = measure_dedup(cfg, service, texts, tmp)
            log(f"dedup speedup: {results.rows['dedup']['speedup']:.1f}x")
        if "fairness" in want:
            alone = write_csv(tmp / "fair-alone.csv", texts.fairness_alone, "alone")
            results.rows["fairness"] = {"alone": timed_job(service, alone)}
        if "big" in want:
            big = measure_big_dump(cfg, service, texts, tmp, busy_checks="fairness" in want)
            if big["busy"]:
                results.rows.setdefault("fairness", {})["busy"] = big.pop("busy")
            results.rows["big"] = big
            log(f"big: ingest {big['ingest_rows_per_s']:.0f} rows/s, {big['seconds']:.0f}s")


def run(cfg: Config) -> Results:
    default = local_model(cfg.models_dir, cfg.model)
    results = Results(
        meta={
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": machine_info(),
            "model": default.name,
            "model_version": default.version,
            "default_model": local_model(cfg.models_dir, None).name,
            "models_dir": str(cfg.models_dir),
            "quick": cfg.quick,
            "bulk_rows": cfg.bulk_rows,
            "big_rows": cfg.big_rows,
            "skipped": sorted(cfg.skip),
            "knobs": {"chunk_size": cfg.chunk_size, "score_batch_size": cfg.score_batch_size},
        }
    )
    log(f"loading reviews from {IMDB_DIR}")
    texts = Texts.split(load_reviews(), cfg)
    started = time.perf_counter()
    if "limit" not in cfg.skip:
        results.rows["limit"] = measure_limit(cfg, texts, default)
        log(f"limit: {results.rows['limit']['reviews_per_s']:.0f} reviews/s")
    if "seed" not in cfg.skip:
        results.rows["seed"] = measure_seed(cfg, texts, default)
        log(f"seed: {results.rows['seed']['reviews_per_s']:.1f} reviews/s")
    with tempfile.TemporaryDirectory(prefix="reviewscore-bench-data-") as tmp_name:
        tmp = Path(tmp_name)
        run_main_stack(cfg, default.name, texts, tmp, results)
        files = bulk_files(cfg, texts, tmp, cfg.compare_passes)
        if "scale" not in cfg.skip:
            results.rows["scale"] = measure_scale(cfg, default.name, files)
        if "knobs" not in cfg.skip:
            results.rows["knobs"] = measure_knobs(cfg, default.name, files)
    if "limit" in results.rows:
        recheck_limit(cfg, texts, default, results.rows["limit"])
        log(f"limit recheck: {results.rows['limit']['recheck_reviews_per_s']:.0f} reviews/s")
    results.meta["total_seconds"] = time.perf_counter() - started
    results.meta["load_average_at_end"] = os.getloadavg()
    return results


# --- targets and the table ---------------------------------------------------------------------


def targets(r: Results) -> list[dict[str, Any]]:
    bulk = r.get("bulk", "reviews_per_s")
    b1 = r.get("limit", "batch1") or {}
    fair_alone, fair_busy = (
        r.get("fairness", "alone", "seconds"),
        r.get("fairness", "busy", "small_job", "seconds"),
    )
    singles_idle, singles_busy = (
        r.get("singles", "p99_ms"),
        r.get("fairness", "busy", "singles", "p99_ms"),
    )
    scale = r.get("scale") or {}
    one = r.get("scale", "1_node_x1", "reviews_per_s")
    two = max(
        (v["reviews_per_s"] for k, v in scale.items() if k != "1_node_x1"), default=None
    )  # the better way of running two processes
    checks = [
        ("bulk / limit", ratio(bulk, r.get("limit", "reviews_per_s")), ">=", 0.90),
        ("bulk / seed", ratio(bulk, r.get("seed", "reviews_per_s")), ">=", 100),
        ("bulk / naive queue", ratio(bulk, r.get("naive", "reviews_per_s")), ">=", 10),
        (
            "singles p99 / batch-1 latency",
            ratio(r.get("singles", "p99_ms"), b1.get("p50_ms")),
            "<=",
            10,
        ),
        (
            "singles throughput / one-review-per-call",
            ratio(r.get("singles", "reviews_per_s"), b1.get("one_per_call_rps")),
            ">=",
            5,
        ),
        ("big dump API peak RSS (MB)", r.get("big", "api_rss", "max_mb"), "<", 300),
        ("big dump worker RSS growth (%)", r.get("big", "worker_rss", "growth_pct"), "<=", 10),
        ("ingest / scoring rate", ratio(r.get("big", "ingest_rows_per_s"), bulk), ">=", 10),
        ("2 workers / 1 worker", ratio(two, one), ">=", 1.8),
        ("small job under dump / alone", ratio(fair_busy, fair_alone), "<=", 10),
        ("singles p99 under dump / idle", ratio(singles_busy, singles_idle), "<=", 2),
    ]
    out = []
    for name, value, op, target in checks:
        met = None if value is None else (value >= target if op == ">=" else value <= target)
        if op == "<" and value is not None:
            met = value < target
        out.append({"name": name, "value": value, "target": f"{op} {target}", "met": met})
    return out


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def passes_text(run: dict[str, Any]) -> str:
    passes = " ".join(f"{v:.0f}" for v in run["passes_reviews_per_s"])
    return f"passes {passes}; ingest {run['ingest_rows_per_s']:,.0f} rows/s"


def phase_text(run: dict[str, Any]) -> str:
    share = run.get("phase_share")
    if not share:
        return "no phase log"
    parts = " ".join(f"{p} {share[p]:.0%}" for p in PHASES)
    model = run["model_reviews_per_s_in_worker"]
    return f"worker busy {run['worker_busy_fraction']:.0%}: {parts}; model in worker {model:,.0f}/s"


def table_lines(r: Results) -> list[str]:
    rows: list[tuple[str, Any, str]] = []
    limit = r.get("limit") or {}
    for name, m in (limit.get("models") or {}).items():
        star = " (default)" if name == r.meta["default_model"] else ""
        if name == r.meta["model"] and "recheck_reviews_per_s" in limit:
            star += f" [recheck at end {limit['recheck_reviews_per_s']:,.0f}]"
        rows.append(
            (
                f"1 limit: {name}{star}",
                m["reviews_per_s"],
                f"best batch {m['best_batch']}; by batch "
                + " ".join(f"{b}:{v:.0f}" for b, v in m["reviews_per_s_by_batch"].items())
                + f"; Scorer.score@{r.meta['knobs']['score_batch_size']}: "
                f"{m['scorer_reviews_per_s_at_worker_batch']:.0f}; batch-1 p50 "
                f"{m['batch1']['p50_ms']:.2f} ms",
            )
        )
    if seed := r.get("seed"):
        rows.append(
            ("2 seed: predict per review", seed["reviews_per_s"], f"{seed['reviews']} reviews")
        )
    if naive := r.get("naive"):
        rows.append(("3 naive: task per review", naive["reviews_per_s"], f"{naive['tasks']} tasks"))
    if bulk := r.get("bulk"):
        rows.append(
            (
                "4 bulk: CSV -> SQL",
                bulk["reviews_per_s"],
                f"{bulk['rows']:,} rows in {bulk['seconds']:.1f}s (upload {bulk['upload_seconds']:.1f}s)"
                f"; {passes_text(bulk)}"
                f"; {phase_text(bulk)}",
            )
        )
    if s := r.get("singles"):
        b1 = limit.get("batch1") or {}
        rows.append(
            (
                f"5 singles: {s['clients']} clients",
                s["reviews_per_s"],
                f"p50 {s['p50_ms']:.0f} ms, p99 {s['p99_ms']:.0f} ms, {s['errors']} errors; "
                f"in-process batch-1 {fmt(b1.get('p50_ms'), 2)} ms = "
                f"{fmt(b1.get('one_per_call_rps'), 0)} reviews/s one per call",
            )
        )
    if big := r.get("big"):
        a, w = big["api_rss"], big["worker_rss"]
        rows.append(
            (
                "6 big dump",
                big["reviews_per_s"],
                f"{big['rows']:,} rows ({big['csv_mb']:,.0f} MB) in {big['seconds']:.0f}s; ingest "
                f"{big['ingest_rows_per_s']:,.0f} rows/s ({big['upload_seconds']:.0f}s); "
                f"computed {big['computed']:,}, from cache {big['from_cache']:,}; "
                f"API RSS max {fmt(a.get('max_mb'), 0)} MB; worker RSS "
                f"{fmt(w.get('start_mb'), 0)}/{fmt(w.get('max_mb'), 0)}/{fmt(w.get('end_mb'), 0)} MB "
                f"start/max/end ({fmt(w.get('growth_pct'))}%)",
            )
        )
    if d := r.get("dedup"):
        for label in ("distinct", "repeated_10x"):
            x = d[label]
            rows.append(
                (
                    f"6 dedup: {label}",
                    x["reviews_per_s"],
                    f"{x['rows']:,} rows, computed {x['computed']:,}, from cache {x['from_cache']:,}",
                )
            )
    if (scale := r.get("scale")) and "1_node_x1" in scale:
        one = scale["1_node_x1"]["reviews_per_s"]
        for label, x in scale.items():
            rows.append(
                (
                    f"7 scale: {label}",
                    x["reviews_per_s"],
                    f"{x['reviews_per_s'] / one:.2f}x of 1 worker; {passes_text(x)}; {phase_text(x)}",
                )
            )
    if f := r.get("fairness"):
        alone, busy = f.get("alone"), f.get("busy") or {}
        if alone:
            rows.append(
                (
                    "8 fairness: 200-row job alone",
                    alone["reviews_per_s"],
                    f"{alone['seconds']:.2f}s",
                )
            )
        if sj := busy.get("small_job"):
            rows.append(
                (
                    "8 fairness: same under dump",
                    sj["reviews_per_s"],
                    f"{sj['seconds']:.2f}s; dump still running: {busy.get('dump_still_running')}",
                )
            )
        if ss := busy.get("singles"):
            rows.append(
                (
                    "8 fairness: singles under dump",
                    ss["reviews_per_s"],
                    f"p50 {ss['p50_ms']:.0f} ms, p99 {ss['p99_ms']:.0f} ms, {ss['errors']} errors",
                )
            )
    for label, x in (r.get("knobs") or {}).items():
        rows.append((f"knobs: {label}", x["reviews_per_s"], f"{passes_text(x)}; {phase_text(x)}"))

    width = max(len(name) for name, _, _ in rows) if rows else 10
    lines = [f"{'row':<{width}}  {'reviews/s':>10}  details", "-" * (width + 60)]
    lines += [f"{name:<{width}}  {fmt(value):>10}  {details}" for name, value, details in rows]
    lines += ["", f"{'target':<42} {'value':>10}  {'wanted':<9} result", "-" * 75]
    for t in r.meta.get("targets", []):
        result = {True: "met", False: "NOT MET", None: "not measured"}[t["met"]]
        lines.append(f"{t['name']:<42} {fmt(t['value'], 2):>10}  {t['target']:<9} {result}")
    return lines


def save(r: Results) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    day = dt.datetime.now(dt.UTC).date().isoformat()
    host = socket.gethostname().split(".")[0]
    path = RESULTS_DIR / f"{day}-{host}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"meta": r.meta, "rows": r.rows}, indent=2, default=str) + "\n")
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    cfg = Config.parse(argv)
    results = run(cfg)
    results.meta["targets"] = targets(results)
    lines = table_lines(results)
    results.meta["table"] = lines
    print("\n".join(lines))
    print(f"\nwritten: {save(results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
