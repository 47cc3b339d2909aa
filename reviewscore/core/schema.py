"""The database schema: jobs, their chunks, input rows, results, the dedup cache and API keys."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    func,
    select,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, column_property, mapped_column, relationship
from sqlalchemy.types import TypeEngine

from reviewscore.core.clock import db_now


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class JobStatus(StrEnum):
    uploading = "uploading"
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    # Its deadline passed before every row was scored: the rows done are kept.
    expired = "expired"

    @property
    def is_final(self) -> bool:
        """Nothing about the job changes any more: no row will be scored, no count will move.
        This is the one rule for "is the job finished?"; clients read it as `finished`."""
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset(
    {JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled, JobStatus.expired}
)


class ChunkStatus(StrEnum):
    queued = "queued"
    running = "running"
    done = "done"


def _stored_as_text(enum: type[StrEnum], length: int = 16) -> Enum:
    # The value as a plain string column (no database enum type, no CHECK): new statuses need
    # no migration, and the mapped attribute is still typed.
    return Enum(
        enum,
        native_enum=False,
        create_constraint=False,
        length=length,
        values_callable=lambda members: [m.value for m in members],
    )


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    # sha256 of the key: the key itself is shown once, at creation, and never stored.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Signs the completion webhooks of this key's jobs (core/webhooks.py). Kept in clear, as
    # HMAC needs it; shown once, at creation. Keys made before webhooks have none.
    webhook_secret: Mapped[str | None] = mapped_column(String(100))
    # The callback_url of this key's jobs that name none.
    callback_url: Mapped[str | None] = mapped_column(Text)
    # This key's own quotas (core/quotas.py; None: the settings' defaults) and its share of the
    # workers next to other keys with work queued (core/fair_share.py; None: 1).
    max_queued_rows: Mapped[int | None] = mapped_column(BigInteger)
    max_unfinished_jobs: Mapped[int | None] = mapped_column(Integer)
    weight: Mapped[float | None] = mapped_column(Float)


class FairShare(Base):
    """How much work each key has been served, in rows divided by its weight (a virtual time):
    the next chunk goes to the key with work queued that has the least (core/fair_share.py).
    Owner 0 stands for the jobs of no key (auth off)."""

    __tablename__ = "fair_shares"

    owner: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    served: Mapped[float] = mapped_column(Float, default=0.0)
    # When it was last served (the database's clock): of two keys level, the one waiting longer
    # goes first.
    served_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Chunk(Base):
    """A slice of a job's rows, scored as one task; also the job's ledger: a done chunk holds
    how many of its rows were scored and failed, and a job's counts are their sums."""

    __tablename__ = "chunks"
    __table_args__ = (
        Index("ix_chunks_status_lease", "status", "lease_until"),
        # The chunks of a job still to be done: "is the job complete?" is one index probe.
        Index(
            "ix_chunks_open",
            "job_id",
            postgresql_where=text("status <> 'done'"),
            sqlite_where=text("status <> 'done'"),
        ),
        # A job's queued chunks by position: a fair claim's pick (core/fair_share.py) is one
        # probe per job, however many of its chunks are done or queued.
        Index(
            "ix_chunks_queued",
            "job_id",
            "seq",
            postgresql_where=text("status = 'queued'"),
            sqlite_where=text("status = 'queued'"),
        ),
    )

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    first_row: Mapped[int] = mapped_column(Integer)
    row_count: Mapped[int] = mapped_column(Integer)
    status: Mapped[ChunkStatus] = mapped_column(
        _stored_as_text(ChunkStatus), default=ChunkStatus.queued
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Stamped with the database's clock (see clock.db_now), so every host judges it alike.
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    queued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=db_now())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=db_now())
    # Which worker process holds the chunk ("node name:pid"); for logs and for a restarted
    # node to hand back what its previous run held.
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    # The Celery task (message) that claimed it: the same message delivered again means its
    # first delivery's worker was lost, and it takes this chunk back (chunks.claim_next).
    claim_task: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(Text)
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    scored_rows: Mapped[int] = mapped_column(Integer, default=0)
    failed_rows: Mapped[int] = mapped_column(Integer, default=0)


def _chunk_total(column: Any, job_id: Any) -> Any:
    return (
        select(func.coalesce(func.sum(column), 0))
        .where(Chunk.job_id == job_id)
        .correlate_except(Chunk)
        .scalar_subquery()
    )


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[JobStatus] = mapped_column(
        _stored_as_text(JobStatus), default=JobStatus.uploading, index=True
    )
    owner_key_id: Mapped[int | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL"), index=True
    )
    model_name: Mapped[str] = mapped_column(String(100))
    model_version: Mapped[str] = mapped_column(String(100))
    filename: Mapped[str | None] = mapped_column(String(255))
    text_column: Mapped[str] = mapped_column(String(255))
    id_column: Mapped[str | None] = mapped_column(String(255))
    # How the upload was read (detected or as given): csv, tsv, jsonl or parquet; the text
    # encoding and separator of text formats; the input columns kept next to the scores.
    input_format: Mapped[str | None] = mapped_column(String(16))
    encoding: Mapped[str | None] = mapped_column(String(64))
    delimiter: Mapped[str | None] = mapped_column(String(8))
    keep_columns: Mapped[list[str] | None] = mapped_column(JSON(none_as_null=True))
    # The column of each row's own label, when the file has one (core/ingest/labels.py): the
    # job's summary then holds an evaluation (core/evaluation.py); positive_from: the labels
    # are ratings, positive from this value up.
    label_column: Mapped[str | None] = mapped_column(String(255))
    positive_from: Mapped[float | None] = mapped_column(Float)
    # Set for a job uploaded in parts (core/parts.py): the options every part is read with.
    part_options: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    # The part count `complete` was called with; the upload is closed from then on.
    parts_total: Mapped[int | None] = mapped_column(Integer)
    # Where the input was fetched from (core/fetch.py), its query string (a presigned URL's
    # signature) left out.
    source_url: Mapped[str | None] = mapped_column(Text)
    # Where the results file is PUT once the job is finished (core/delivery.py), in
    # result_format; the outcome: delivered_at, or the last error and the next try.
    result_url: Mapped[str | None] = mapped_column(Text)
    result_format: Mapped[str | None] = mapped_column(String(16))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivery_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    delivery_next_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivery_error: Mapped[str | None] = mapped_column(Text)
    # Where the job's completion event is POSTed (core/webhooks.py), query string included.
    callback_url: Mapped[str | None] = mapped_column(Text)
    # Known once the upload has finished; until then the job cannot complete. The counts of
    # rows received, scored and failed are not kept here: they are summed from the chunks, so
    # no worker ever writes (and locks) the job's row to count its chunk.
    total_rows: Mapped[int | None] = mapped_column(Integer)
    # Why the job will end `failed` (an upload cut short, say). The rows received before it
    # are still scored; the status turns `failed` once they all have their results.
    error: Mapped[str | None] = mapped_column(Text)
    device: Mapped[str | None] = mapped_column(String(64))
    # Every job and chunk time is the database's (clock.db_now): hosts' clocks may disagree.
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=db_now(), index=True
    )
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=db_now())
    upload_finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Keep the review texts once scored (keep_texts=true); by default a chunk's texts are
    # dropped when it is done, as only ids, kept columns and results are ever read back.
    keep_texts: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # When the upload's request last saw bytes arrive (core/uploads.py beats while they do):
    # the sweeper calls an upload stalled from this, never from chunks, which a slow client
    # fills slowly.
    upload_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Indexed: /metrics reads the jobs finished since its last scrape (api/metrics.py).
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    # Set by a DELETE (jobs.delete_job) before the job's rows go, in short batches: from then on
    # the job is gone for every reader, and cancelled, so nothing is claimed, written or added.
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The job's own terms (core/job_options.py): past deadline_at no chunk is handed out and
    # the sweeper ends it `expired`; retention_s (within the service's retention) is how long
    # it is kept once finished; past max_failed_fraction of failed rows it ends `failed`.
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    retention_s: Mapped[float | None] = mapped_column(Float)
    max_failed_fraction: Mapped[float | None] = mapped_column(Float)
    labels: Mapped[list[JobLabel]] = relationship(
        lazy="selectin", order_by="JobLabel.key", cascade="all, delete-orphan"
    )

    # The counts, summed from the chunks' ledger each time a job is read (an index range scan
    # of the job's chunks): there is nothing to keep in step, and nothing for workers to lock.
    received_rows: Mapped[int] = column_property(_chunk_total(Chunk.row_count, id))
    scored_rows: Mapped[int] = column_property(_chunk_total(Chunk.scored_rows, id))
    failed_rows: Mapped[int] = column_property(_chunk_total(Chunk.failed_rows, id))
    chunks_total: Mapped[int] = column_property(
        select(func.count()).where(Chunk.job_id == id).correlate_except(Chunk).scalar_subquery()
    )
    last_done_at: Mapped[datetime | None] = column_property(
        select(func.max(Chunk.done_at))
        .where(Chunk.job_id == id)
        .correlate_except(Chunk)
        .scalar_subquery()
    )

    @property
    def finished(self) -> bool:
        return JobStatus(self.status).is_final

    @property
    def in_parts(self) -> bool:
        return self.part_options is not None

    @property
    def label_pairs(self) -> dict[str, str]:
        return {label.key: label.value for label in self.labels}


class JobLabel(Base):
    """One of a job's labels (its `metadata`): a row per pair, so jobs are found by label with
    an index probe on every backend (GET /v1/jobs?label=team:search)."""

    __tablename__ = "job_labels"
    __table_args__ = (Index("ix_job_labels_key_value", "key", "value"),)

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))


class IdempotencyKey(Base):
    """An Idempotency-Key sent with POST /v1/jobs (core/idempotency.py): per API key (`scope`),
    the sha256 of the request it came with and the job that request made. The primary key is
    what lets only one of two requests sent at once with the same key keep its job."""

    __tablename__ = "idempotency_keys"

    scope: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_sha256: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=db_now())


class PartState(StrEnum):
    storing = "storing"
    stored = "stored"


class JobPart(Base):
    """One numbered part of an upload in parts: while `storing`, the request that claimed it
    is parsing it (its heartbeat `updated_at` moves); once `stored`, its bytes' sha256 and its
    rows are known and a resend of the same bytes stores nothing."""

    __tablename__ = "job_parts"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    state: Mapped[PartState] = mapped_column(_stored_as_text(PartState))
    # Which request holds a `storing` part, so a request that lost it never marks it stored.
    token: Mapped[str] = mapped_column(String(32))
    sha256: Mapped[str | None] = mapped_column(String(64))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    rows: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=db_now())


class ChunkText(Base):
    """A chunk's review texts, in row order, as one compressed blob (core/chunk_texts.py): one
    SQL row per chunk instead of a text per row, dropped once the chunk is done unless its job
    keeps them (Job.keep_texts). Rows stored before this table have their text in input_rows."""

    __tablename__ = "chunk_texts"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class InputRow(Base):
    # On PostgreSQL its primary key's pages are filled whole (fillfactor 100, migration 0014), as
    # are results': a job's rows come in key order.
    __tablename__ = "input_rows"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    # 1-based data row number: the input order, and the default id.
    row_num: Mapped[int] = mapped_column(Integer, primary_key=True)
    ext_id: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    # Set at ingest for rows that cannot be scored (empty text, too long, wrong width).
    error: Mapped[str | None] = mapped_column(Text)
    # The values of the job's keep_columns for this row, by column name (None if none kept).
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    # The row's own label (ingest/labels.py: 1 positive, 0 negative, -1 unreadable; NULL none)
    # and, for a labeled row, its text's word count: the texts themselves may be dropped once
    # scored, and the evaluation reports accuracy by review length.
    label: Mapped[int | None] = mapped_column(SmallInteger)
    words: Mapped[int | None] = mapped_column(Integer)


class Result(Base):
    __tablename__ = "results"
    __table_args__ = (
        ForeignKeyConstraint(
            ["job_id", "row_num"],
            ["input_rows.job_id", "input_rows.row_num"],
            ondelete="CASCADE",
            name="fk_results_input_rows",
        ),
    )

    # In the tables' column order (migration 0014): on PostgreSQL the bool fills the padding
    # between job_id and row_num.
    job_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    row_num: Mapped[int] = mapped_column(Integer, primary_key=True)
    p_positive: Mapped[float | None] = mapped_column(Float)
    # No model version per row: a job's rows are all scored by the version it is pinned to
    # (Job.model_version), which readers take from the job; 16 bytes a row on PostgreSQL.
    error: Mapped[str | None] = mapped_column(Text)


class Key16(TypeDecorator[bytes]):
    """16 bytes, as PostgreSQL's uuid (fixed width: no length byte, and 8 bytes less an index
    entry than a bytea of 20) and as a 16-byte blob on SQLite; bytes in Python on both."""

    impl = LargeBinary(16)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.UUID(as_uuid=True))
        return dialect.type_descriptor(LargeBinary(16))

    def process_bind_param(self, value: bytes | None, dialect: Dialect) -> Any:
        if value is None or dialect.name != "postgresql":
            return value
        return uuid.UUID(bytes=bytes(value))

    def process_result_value(self, value: Any, dialect: Dialect) -> bytes | None:
        if isinstance(value, uuid.UUID):
            return value.bytes
        return value if value is None else bytes(value)


class ScoreCache(Base):
    """Scores already computed, by model version and text hash, so repeats are not rescored.
    Each entry belongs to the job whose chunk first scored the text, and goes with that job
    (its delete, or retention): a text's hash never outlives the jobs that sent it."""

    __tablename__ = "score_cache"

    # The first 16 bytes of the sha1 of the model version and the text's sha1 (worker/cache.py):
    # one fixed-width key instead of the version's string and the hash side by side in every
    # row and index entry (about 70 bytes a row on PostgreSQL); 128 bits, so no two texts a
    # cache will ever hold share one.
    key: Mapped[bytes] = mapped_column(Key16, primary_key=True)
    truncated: Mapped[bool] = mapped_column(Boolean)
    # No foreign key: a key check would lock the job's row on every insert, and deletes go in
    # batches of their own (jobs.delete_job), never by cascade.
    job_id: Mapped[str | None] = mapped_column(String(32), index=True)
    # Last: a float is aligned to 8 bytes on PostgreSQL, here with no padding before it.
    p_positive: Mapped[float] = mapped_column(Float)


class ModelVersion(Base):
    """A published model file: the registry every host shares (see core/model_registry.py)."""

    __tablename__ = "model_versions"
    # Two hosts publishing the same name at once cannot both take the same generation.
    __table_args__ = (UniqueConstraint("name", "generation"),)

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    # "<name>-<first 12 hex digits of the sha256>": names the exact file.
    version: Mapped[str] = mapped_column(String(100), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    architecture: Mapped[str] = mapped_column(String(255))
    file_name: Mapped[str] = mapped_column(String(255))
    size_bytes: Mapped[int] = mapped_column(Integer)
    # metadata.json as training wrote it (figures, max_tokens, data fingerprint).
    meta: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Loaded only when a worker fetches it (deferred): listing models never reads megabytes.
    artifact: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    # 1, 2, 3... per name in publishing order: the highest is the current version.
    generation: Mapped[int] = mapped_column(Integer)
    published_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=db_now())
    # Set when this version was made the default (`reviewscore train --make-default`): the name
    # made default last is the default, unless REVIEWSCORE_DEFAULT_MODEL names one.
    made_default_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TrainingStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


class TrainingRun(Base):
    """A model trained from the labeled rows of a key's jobs (core/training_runs.py): what was
    asked, how far it is, and its outcome: the published version and the report comparing it
    with the default model on the held-out rows."""

    __tablename__ = "training_runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_key_id: Mapped[int | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL"), index=True
    )
    status: Mapped[TrainingStatus] = mapped_column(
        _stored_as_text(TrainingStatus), default=TrainingStatus.queued
    )
    # The request: job_ids, with_imdb, architecture, make_default.
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    model_name: Mapped[str] = mapped_column(String(100))
    # 0..1, and what the worker is doing now (a few words).
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    stage: Mapped[str | None] = mapped_column(String(100))
    error: Mapped[str | None] = mapped_column(Text)
    model_version: Mapped[str | None] = mapped_column(String(100))
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=db_now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WebhookEvent(Base):
    """The outbox of completion webhooks (core/webhooks.py): one row per finished job with a
    callback_url, written in the transaction that makes the job final, so no restart loses it.
    Its id is the `webhook-id` of every attempt; its body is fixed at the first attempt."""

    __tablename__ = "webhook_events"
    __table_args__ = (Index("ix_webhook_events_next_at", "next_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(32), unique=True)
    type: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=db_now())
    # Due at this time; pushed past a lease while a sender holds it; null once delivered or
    # given up.
    next_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    body: Mapped[bytes | None] = mapped_column(LargeBinary)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)


class WebhookDelivery(Base):
    """One attempt to POST a webhook event: what GET /v1/jobs/{id}/deliveries lists."""

    __tablename__ = "webhook_deliveries"

    event_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_events.id", ondelete="CASCADE"), primary_key=True
    )
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    sent_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=db_now())
    # The receiver's HTTP status; null when none came (refused, timed out, not sent).
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
