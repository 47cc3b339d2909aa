"""Turns an upload stream into a job: rows committed chunk by chunk, each chunk queued once stored.

A file refused before its first row leaves no job. A failure after rows were stored keeps them
(the job ends failed, its rows scored), except a request found invalid as a whole once its
file was read (options sent after the file): its job is cancelled and deleted."""

from __future__ import annotations

import io
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from sqlalchemy.exc import InterfaceError, OperationalError

from reviewscore.core import chunks, jobs, webhooks
from reviewscore.core.db import session_scope
from reviewscore.core.errors import (
    BadUploadError,
    DatabaseUnavailableError,
    JobStateError,
    ReviewscoreError,
    UploadInterruptedError,
)
from reviewscore.core.ingest import (
    IngestLimits,
    ParsedRow,
    RecordSpec,
    Reviews,
    UploadOptions,
    open_reviews,
    records,
)
from reviewscore.core.job_options import JobOptions
from reviewscore.core.model_registry import ModelInfo
from reviewscore.core.settings import Settings

log = logging.getLogger(__name__)

__all__ = [
    "Preview",
    "RequestRefusedError",
    "ResultDestination",
    "UploadFailedError",
    "UploadOptions",
    "preview_upload",
    "store_upload",
]


class RequestRefusedError(BadUploadError):
    """The request is refused as a whole, though its file was read: nothing of it is kept (the
    job its rows went into is cancelled and deleted)."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message, status_code)


class UploadFailedError(ReviewscoreError):
    """The upload broke off after a job was created: the rows before the break are kept."""

    def __init__(self, cause: ReviewscoreError, job_id: str, rows_kept: int) -> None:
        super().__init__(
            f"{cause.message}; job {job_id} kept the {rows_kept:,} "
            f"row{'' if rows_kept == 1 else 's'} received before this point, and they are "
            "being scored"
        )
        self.status_code = cause.status_code
        self.job_id = job_id


class UploadDatabaseLostError(DatabaseUnavailableError):
    """The database went away after the job was created: the client learns the job id, and the
    job is closed (failed, its stored rows scored) as soon as the database is back."""

    def __init__(self, job_id: str, rows_kept: int, cause: Exception, *, whole: bool) -> None:
        outcome = (
            f"all {rows_kept:,} rows were stored: it is closed and scored once the database is back"
            if whole
            else f"it kept the {rows_kept:,} rows stored before that, ends failed once the "
            "database is back, and those rows are scored"
        )
        super().__init__(
            f"the database became unavailable during the upload ({type(cause).__name__}); "
            f"job {job_id}: {outcome}"
        )
        self.job_id = job_id


# The database is unreachable or dropped the connection (a restart, a cut link, a lock waited
# on past lock_timeout): worth a 503 and a retry, unlike a constraint or a programming error.
DATABASE_AWAY = (OperationalError, InterfaceError)


@dataclass(frozen=True)
class ResultDestination:
    """Where a job's outcome goes once it is finished: its results PUT to `url`
    (core/delivery.py), its completion webhook POSTed to `callback_url` (core/webhooks.py)."""

    url: str | None
    format: str = "csv"
    callback_url: str | None = None

    def job_fields(self) -> dict[str, Any]:
        results = {"result_url": self.url, "result_format": self.format} if self.url else {}
        return results | {"callback_url": self.callback_url}


def limits_from(settings: Settings) -> IngestLimits:
    return IngestLimits(
        max_upload_bytes=settings.max_upload_bytes,
        max_text_bytes=settings.max_text_bytes,
        max_rows=settings.max_rows_per_job,
        max_gzip_ratio=settings.max_gzip_ratio,
        spool_dir=settings.var_dir / "spool",
    )


# A record stored unparsed (core/ingest/records.py): its row number and its bytes as read.
Record = tuple[int, bytes]


class ChunkWriter:
    """Buffers parsed rows (or, with a RecordSpec, records to store unparsed) and stores them
    chunk by chunk: each chunk is committed, then queued, so scoring starts while the upload
    still streams."""

    def __init__(
        self,
        job_id: str,
        chunk_size: int,
        enqueue: Callable[[str, int], None],
        *,
        first_seq: int = 0,
        spec: RecordSpec | None = None,
    ) -> None:
        self.job_id = job_id
        self.chunk_size = chunk_size
        self.enqueue = enqueue
        self.spec = spec
        # A part of an upload in parts numbers its chunks from its own range (core/parts.py).
        self.seq = first_seq
        self.stored = 0
        self.buffer: list[ParsedRow] = []
        self.records: list[Record] = []

    def add(self, item: ParsedRow | Record) -> None:
        if isinstance(item, ParsedRow):
            self.buffer.append(item)
            full = len(self.buffer) >= self.chunk_size
        else:
            self.records.append(item)
            full = len(self.records) >= self.chunk_size
        if full:
            self.flush()

    def flush(self) -> None:
        rows = len(self.buffer) + len(self.records)
        if not rows:
            return
        blob = None
        if self.records:
            assert self.spec is not None
            blob = records.pack(
                self.spec, [raw for _, raw in self.records]
            )  # outside the transaction
        with session_scope() as session:
            if not jobs.accepts_rows(session, self.job_id):
                raise UploadStoppedError(self.job_id)
            if blob is None:
                chunks.add_chunk(session, self.job_id, self.seq, self.buffer)
            else:
                chunks.add_records(session, self.job_id, self.seq, self.records[0][0], rows, blob)
        try:
            self.enqueue(self.job_id, self.seq)
        except Exception:  # noqa: BLE001 - the sweeper re-sends chunks whose message never left
            log.exception("could not queue chunk %s/%s; the sweeper will", self.job_id, self.seq)
        self.seq += 1
        self.stored += rows
        self.buffer = []
        self.records = []


def items_of(
    reviews: Reviews, settings: Settings
) -> tuple[Iterator[ParsedRow | Record], RecordSpec | None]:
    """What the upload's chunks are made of: its records, stored unparsed for the workers to
    parse (settings.ingest_parse "worker", for a format that can be), else its parsed rows."""
    spec = reviews.record_spec() if settings.ingest_parse == "worker" else None
    if spec is None:
        return iter(reviews), None
    return reviews.records(), spec


class UploadStoppedError(JobStateError):
    """The job was cancelled (or deleted) while its upload was still streaming."""

    def __init__(self, job_id: str) -> None:
        super().__init__(
            f"job {job_id} was cancelled, closed or deleted during its upload; the rows sent "
            "after that were not stored"
        )
        self.job_id = job_id


def _close(job_id: str, error: str | None = None) -> int:
    """Closes the upload (see jobs.finish_upload) and returns the rows kept."""
    with session_scope() as session:
        jobs.finish_upload(session, job_id, error=error)
        kept = jobs.get_job(session, job_id).received_rows
    if jobs.try_complete(job_id):  # every row was scored while it arrived
        webhooks.send_soon(job_id)
    return kept


def close_when_database_is_back(job_id: str, error: str | None, give_up_after_s: float) -> None:
    """Closes an upload the database outage broke, from a background thread that retries
    (backoff up to 2 s) until the database answers, so the job ends failed within seconds of
    the database's return. Past `give_up_after_s` (or if this process dies) the sweeper closes
    it as a stalled upload."""

    def retry() -> None:
        deadline = time.monotonic() + give_up_after_s
        delay = 0.25
        while True:
            try:
                _close(job_id, error)
                log.warning("upload of job %s closed after the database outage", job_id)
                return
            except DATABASE_AWAY:
                if time.monotonic() > deadline:
                    log.warning("upload of job %s: left to the sweeper", job_id)
                    return
                time.sleep(delay)
                delay = min(2.0, delay * 2)

    threading.Thread(target=retry, name=f"close-upload-{job_id}", daemon=True).start()


def store_upload(
    raw: BinaryIO,
    options: UploadOptions,
    *,
    model: ModelInfo,
    settings: Settings,
    enqueue: Callable[[str, int], None],
    owner_key_id: int | None = None,
    destination: ResultDestination | None = None,
    keep_texts: bool = False,
    source_url: str | None = None,
    job_options: JobOptions | None = None,
) -> str:
    """Streams an upload into the database and queues its chunks as they are stored.

    Errors in the header raise before any job exists. Errors later end the job `failed` but
    keep, and score, every row received before them.
    """
    arriving = _CountingReader(raw)
    reviews = open_reviews(arriving, limits_from(settings), options)  # type: ignore[arg-type]
    beat: _UploadBeat | None = None
    try:
        rows, spec = items_of(reviews, settings)
        first = next(rows, None)
        if first is None:
            raise BadUploadError("the file has a header but no data rows")
        with session_scope() as session:
            job_id = jobs.create_job(
                session,
                model_name=model.name,
                model_version=model.version,
                filename=options.filename,
                text_column=reviews.text_column,
                id_column=reviews.id_column,
                owner_key_id=owner_key_id,
                input_format=reviews.format,
                encoding=reviews.encoding,
                delimiter=reviews.delimiter,
                keep_columns=reviews.keep_columns,
                **(destination.job_fields() if destination else {}),
                keep_texts=keep_texts,
                source_url=source_url,
                **(job_options or JobOptions()).job_fields(),
                label_column=reviews.label_column,
                positive_from=options.positive_from if reviews.label_column else None,
            )
        beat = _UploadBeat(job_id, arriving, min(5.0, settings.upload_stall_s / 3))
        _store_rows(job_id, first, rows, settings, enqueue, spec)
    finally:
        if beat is not None:
            beat.stop()
        reviews.close()
    return job_id


class _CountingReader(io.RawIOBase):
    """The upload's bytes, counted as they arrive (what says an upload is alive)."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.received = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._raw.read(len(buffer))
        buffer[: len(data)] = data
        self.received += len(data)
        return len(data)


class _UploadBeat:
    """Marks the job's upload as alive every `every_s` in which bytes arrived, from a thread of
    its own: a slow client's upload is judged by its bytes, not by how fast it fills chunks."""

    def __init__(self, job_id: str, arriving: _CountingReader, every_s: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(job_id, arriving, every_s), name=f"upload-{job_id}", daemon=True
        )
        self._thread.start()

    def _run(self, job_id: str, arriving: _CountingReader, every_s: float) -> None:
        last = arriving.received
        while not self._stop.wait(every_s):
            if arriving.received != last:
                last = arriving.received
                try:
                    jobs.touch_upload(job_id)
                except Exception:  # noqa: BLE001 - a missed beat: the next one may pass
                    log.warning("could not mark the upload of job %s alive", job_id)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _store_rows(
    job_id: str,
    first: ParsedRow | Record,
    rows: Iterator[ParsedRow | Record],
    settings: Settings,
    enqueue: Callable[[str, int], None],
    spec: RecordSpec | None,
) -> None:
    writer = ChunkWriter(job_id, settings.chunk_size, enqueue, spec=spec)
    try:
        writer.add(first)
        for row in rows:
            writer.add(row)
        writer.flush()
    except UploadStoppedError:
        _close(job_id)
        raise
    except RequestRefusedError:
        jobs.discard(job_id)
        raise
    except ReviewscoreError as exc:
        writer.flush()
        error = exc.message
        if isinstance(exc, UploadInterruptedError):
            error = (
                f"{jobs.UPLOAD_INTERRUPTED} after {writer.stored:,} rows received "
                "(they were kept and are scored)"
            )
        kept = _close(job_id, error)
        raise UploadFailedError(exc, job_id, kept) from exc
    except DATABASE_AWAY as exc:
        close_when_database_is_back(
            job_id,
            f"{jobs.UPLOAD_INTERRUPTED}: the database became unavailable after "
            f"{writer.stored:,} rows were stored (they were kept and are scored)",
            settings.upload_stall_s,
        )
        raise UploadDatabaseLostError(job_id, writer.stored, exc, whole=False) from exc
    try:
        _close(job_id)
    except DATABASE_AWAY as exc:
        close_when_database_is_back(job_id, None, settings.upload_stall_s)
        raise UploadDatabaseLostError(job_id, writer.stored, exc, whole=True) from exc


@dataclass(frozen=True)
class Preview:
    """How an upload would be read, from its first bytes: nothing is stored."""

    format: str
    encoding: str | None
    delimiter: str | None
    columns: list[str]
    text_column: str
    id_column: str | None
    keep_columns: list[str]
    label_column: str | None
    rows: list[ParsedRow]
    # What stopped the sample short (a bad row, or the end of a file sent cut), if anything.
    error: str | None


def preview_upload(
    raw: BinaryIO, options: UploadOptions, *, settings: Settings, rows: int = 5
) -> Preview:
    """Reads the header and the first rows of an upload as store_upload would, and stops.
    Refusals are the same errors; a file sent cut short (its first MiB, say) is fine."""
    reviews = open_reviews(raw, limits_from(settings), options)
    sample: list[ParsedRow] = []
    error = None
    try:
        sample.extend(itertools.islice(reviews, rows))
    except ReviewscoreError as exc:
        error = exc.message
    finally:
        reviews.close()
    return Preview(
        format=reviews.format,
        encoding=reviews.encoding,
        delimiter=reviews.delimiter,
        columns=reviews.columns,
        text_column=reviews.text_column,
        id_column=reviews.id_column,
        keep_columns=reviews.keep_columns,
        label_column=reviews.label_column,
        rows=sample,
        error=error,
    )
