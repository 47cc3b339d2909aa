"""All configuration, read from environment variables prefixed REVIEWSCORE_ (or a .env file)."""

from __future__ import annotations

import os
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[2]
# "reviewscore" is flower_password's own default: Flower in production must not run with it.
UNSAFE_SECRETS = {"", "changeme", "change-me", "admin", "password", "secret", "reviewscore"}


class Environment(StrEnum):
    development = "development"
    production = "production"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REVIEWSCORE_", env_file=".env", extra="ignore")

    env: Environment = Environment.development
    # Where `make run` keeps its SQLite file, embedded Redis and logs.
    var_dir: Path = REPO_ROOT / "var"
    database_url: str = ""
    # Empty: `reviewscore run` starts an embedded Redis (loopback TCP, generated password) and
    # gives its URL to every process it starts.
    redis_url: str = ""
    models_dir: Path = REPO_ROOT / "models"
    # Empty: the model made default last (`reviewscore train --make-default`), else the
    # installed model with the best test accuracy.
    default_model: str = ""
    # Training from a user's labels (core/training_runs.py): the fewest labeled rows, and of
    # each class, a request may train on; the share of them held out (stratified) to compare
    # the new model with the default; where a worker reads IMDB's train split (--with-imdb).
    train_min_labeled_rows: Annotated[int, Field(ge=10)] = 100
    train_min_per_class: Annotated[int, Field(ge=2)] = 10
    train_holdout_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2
    imdb_dir: Path = REPO_ROOT.parent / "shared" / "data" / "imdb"

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_url: str = "http://127.0.0.1:8000"
    flower_port: int = 5555
    flower_user: str = "admin"
    flower_password: str = "reviewscore"

    chunk_size: Annotated[int, Field(ge=1, le=100_000)] = 1000
    # Who parses an upload's text rows (CSV, TSV, JSON Lines) into fields: "worker" (the API
    # reads each record, stores each chunk's records as one blob, and the worker that scores the
    # chunk parses it: ingest grows with worker cores) or "api" (the API parses and stores a SQL
    # row per review, as before). Parquet and stateful legacy codecs are parsed by the API.
    ingest_parse: Literal["worker", "api"] = "worker"
    score_batch_size: Annotated[int, Field(ge=1, le=8192)] = 256
    max_reviews_per_request: Annotated[int, Field(ge=1)] = 256
    max_upload_bytes: int = 2 * 1024**3
    max_text_bytes: int = 100_000
    max_rows_per_job: int = 5_000_000
    max_gzip_ratio: int = 200
    # Each API key's quotas (core/quotas.py), unless the key has its own (`reviewscore keys
    # set-quota`): rows received and not yet scored, and jobs not finished. Past one a new
    # upload (or part) is answered 429 with Retry-After; with auth off there are no quotas.
    key_max_queued_rows: Annotated[int, Field(ge=0)] = 10_000_000
    key_max_unfinished_jobs: Annotated[int, Field(ge=0)] = 100
    quota_retry_after_s: Annotated[int, Field(ge=1)] = 30
    singles_timeout_s: float = 30.0
    # Micro-batching of /v1/score in each API process (api/batcher.py): a request goes out at once
    # when no batch is out; while one is, requests gather and leave together when it comes back,
    # and a full batch (singles_batch_max reviews) goes out beside it, up to singles_max_in_flight.
    # 32 keeps two pool processes busy at 64 connections on 2 cores (measured: see Performance).
    singles_max_in_flight: Annotated[int, Field(ge=1)] = 4
    singles_batch_max: Annotated[int, Field(ge=1)] = 32
    # Reviews waiting for a batch to leave, at most; a request past it is answered 503 at once.
    singles_max_waiting: Annotated[int, Field(ge=1)] = 2048

    # Backpressure: uploads at once (more get 503 + Retry-After), and how slow one may be: no
    # byte for upload_idle_timeout_s, or under upload_min_bytes_per_s over that long, ends it.
    max_concurrent_uploads: Annotated[int, Field(ge=1)] = 8
    upload_idle_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    upload_min_bytes_per_s: Annotated[int, Field(ge=0)] = 1024
    # The API's connections (api/http_guard.py): a request's head must arrive whole this fast
    # and this small; beyond max connections new ones are closed at once.
    http_header_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    http_max_header_bytes: Annotated[int, Field(ge=1024)] = 65536
    http_max_connections: Annotated[int, Field(ge=1)] = 1000
    # Empty: /metrics is open (as /healthz); set, a scrape must send it as a bearer token.
    metrics_token: str = ""
    # How long the API waits for Redis or the database in /readyz, and Redis socket timeouts.
    health_timeout_s: Annotated[float, Field(gt=0)] = 2.0
    redis_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    # `reviewscore run`: how long a stop waits for workers to finish their chunk.
    shutdown_grace_s: Annotated[float, Field(ge=0)] = 60.0
    # `reviewscore run`'s log of each child (var/logs/NAME.log) rolls over past this size;
    # this many older files (NAME.log.1 ...) are kept.
    log_max_bytes: Annotated[int, Field(ge=4096)] = 50 * 1024**2
    log_backups: Annotated[int, Field(ge=0)] = 5

    # URLs the service may fetch from or send to (reviewscore/core/urls.py): comma-separated
    # prefixes; empty = every URL refused. file:// URLs only under these folders.
    url_allow: str = ""
    url_file_dirs: str = ""
    # Fetching a source_url (reviewscore/core/fetch.py): byte ranges at once and their size,
    # tries of one request that makes no progress (backoff between), and the socket timeout.
    fetch_parallel: Annotated[int, Field(ge=1, le=64)] = 4
    fetch_range_bytes: Annotated[int, Field(ge=64 * 1024)] = 8 * 1024**2
    fetch_attempts: Annotated[int, Field(ge=1)] = 8
    fetch_timeout_s: Annotated[float, Field(gt=0)] = 30.0

    chunk_max_attempts: Annotated[int, Field(ge=1)] = 3
    # A running chunk whose worker went silent this long is handed to another worker.
    chunk_lease_s: float = 300.0
    # A queued chunk still untouched this long while the queue is empty lost its message.
    queued_grace_s: float = 120.0
    upload_stall_s: float = 300.0
    # An upload in parts nothing was sent to for this long, never completed, ends failed.
    parts_upload_ttl_s: Annotated[float, Field(gt=0)] = 86_400.0
    sweep_interval_s: float = 30.0
    # Results PUT to a job's result_url: tries before giving up, and how long one PUT may take.
    delivery_max_attempts: Annotated[int, Field(ge=1)] = 8
    delivery_timeout_s: Annotated[float, Field(gt=0)] = 300.0
    # Completion webhooks (core/webhooks.py): the signing secret (whsec_..., `reviewscore keys
    # create` gives each key its own) of jobs sent without a key; how long one POST may take;
    # the first retry's wait, doubled each time up to the cap; how long a job's event is retried.
    webhook_secret: str = ""
    webhook_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    webhook_backoff_s: Annotated[float, Field(gt=0)] = 5.0
    webhook_backoff_max_s: Annotated[float, Field(gt=0)] = 3600.0
    webhook_retry_for_s: Annotated[float, Field(gt=0)] = 86_400.0
    job_retention_days: float = 30.0

    # PostgreSQL: how long a statement waits for a lock, how long the server keeps a transaction
    # whose client went silent, and how soon TCP gives up on a peer that stopped answering.
    db_lock_timeout_s: float = 5.0
    db_idle_transaction_timeout_s: float = 10.0
    db_tcp_timeout_s: float = 10.0

    # Pool processes per worker node; 0 = one per CPU core (measured fastest on 2 cores).
    worker_concurrency: int = 0
    # TensorFlow threads per worker process; 0 = cores / worker processes.
    tf_threads: int = 0
    # Model versions each worker process keeps loaded (least recently used goes first): jobs
    # pinned to older versions load theirs again when they come.
    worker_model_cache: Annotated[int, Field(ge=1)] = 2

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.var_dir / 'reviewscore.db'}"
        return self

    def unsafe_flower_password(self) -> str | None:
        """Why Flower must not start with these settings, or None. Only Flower asks: the API,
        the workers and beat never use its password, so they start without one."""
        if self.env is Environment.production and self.flower_password in UNSAFE_SECRETS:
            return (
                "REVIEWSCORE_FLOWER_PASSWORD must be set to a real secret when "
                "REVIEWSCORE_ENV=production (Flower shows every task's arguments: review texts)"
            )
        return None

    @property
    def worker_processes(self) -> int:
        return self.worker_concurrency or os.cpu_count() or 1

    @property
    def embedded_redis_dir(self) -> Path:
        """Where `reviewscore run` keeps its embedded Redis: AOF, config, password, URL."""
        return self.var_dir / "redis"

    @property
    def broker_url(self) -> str:
        # Empty REDIS_URL: the embedded Redis of this var folder (`reviewscore run` also passes
        # its URL to what it starts), else a Redis on this host's default port.
        if self.redis_url:
            return self.redis_url
        try:
            return (self.embedded_redis_dir / "url").read_text().strip()
        except OSError:
            return "redis://127.0.0.1:6379/0"


@lru_cache
def get_settings() -> Settings:
    return Settings()
