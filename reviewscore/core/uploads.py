"""Turns an upload stream into a job: rows committed chunk by chunk, each chunk queued once stored."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from reviewscore.core import jobs
from reviewscore.core.db import session_scope
from reviewscore.core.errors import BadUploadError, ReviewscoreError, UploadInterruptedError
from reviewscore.core.ingest import CsvReviews, IngestLimits, ParsedRow
from reviewscore.core.model_registry import ModelInfo
from reviewscore.core.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UploadOptions:
    filename: str | None = None
    text_column: str | None = None
    id_column: str | None = None
    encoding: str | None = None


class UploadFailedError(ReviewscoreError):
    """The upload broke off after a job was created: the rows before the break are kept."""

    def __init__(self, cause: ReviewscoreError, job_id: str, rows_kept: int) -> None:
        super().__init__(
            f"{cause.message}; job {job_id} kept the {rows_kept:,} rows received before "
            "this point, and they are being scored"
        )
        self.status_code = cause.status_code
        self.job_id = job_id


def limits_from(settings: Settings) -> IngestLimits:
    return IngestLimits(
        max_upload_bytes=settings.max_upload_bytes,
        max_text_bytes=settings.max_text_bytes,
        max_rows=settings.max_rows_per_job,
        max_gzip_ratio=settings.max_gzip_ratio,
    )


def store_upload(
    raw: BinaryIO,
    options: UploadOptions,
    *,
    model: ModelInfo,
    settings: Settings,
    enqueue: Callable[[str, int], None],
    owner_key_id: int | None = None,
    on_job_created: Callable[[str], None] | None = None,
) -> str:
    """Streams a CSV into the database and queues its chunks as they are stored.

    Errors in the header raise before any job exists. Errors later fail the job but keep, and
    score, every row received before them.
    """
    reviews = CsvReviews(
        raw,
        limits_from(settings),
        text_column=options.text_column,
        id_column=options.id_column,
        encoding=options.encoding,
    )
    job_id: str | None = None
    seq = 0
    buffer: list[ParsedRow] = []

    def flush() -> None:
        nonlocal seq, buffer
        if not buffer or job_id is None:
            return
        with session_scope() as session:
            jobs.add_chunk(session, job_id, seq, buffer)
        try:
            enqueue(job_id, seq)
        except Exception:  # noqa: BLE001 - the sweeper re-sends chunks whose message never left
            log.exception("could not queue chunk %s/%s; the sweeper will", job_id, seq)
        seq += 1
        buffer = []

    try:
        for row in reviews:
            if job_id is None:
                with session_scope() as session:
                    job = jobs.create_job(
                        session,
                        model_name=model.name,
                        model_version=model.version,
                        filename=options.filename,
                        text_column=reviews.text_column,
                        id_column=reviews.id_column,
                        owner_key_id=owner_key_id,
                    )
                    job_id = job.id
                if on_job_created:
                    on_job_created(job_id)
            buffer.append(row)
            if len(buffer) >= settings.chunk_size:
                flush()
        if job_id is None:
            raise BadUploadError("the file has a header but no data rows")
        flush()
        with session_scope() as session:
            jobs.finish_upload(session, job_id)
        return job_id
    except (ReviewscoreError, UploadInterruptedError) as exc:
        if job_id is None:
            raise
        flush()
        with session_scope() as session:
            job = jobs.finish_upload(session, job_id, error=exc.message)
            kept = job.received_rows
            if isinstance(exc, UploadInterruptedError):
                job.error = (
                    f"{jobs.UPLOAD_INTERRUPTED} after {kept:,} rows received "
                    "(they were kept and are scored)"
                )
        raise UploadFailedError(exc, job_id, kept) from exc
