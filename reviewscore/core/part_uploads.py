"""Storing one part of an upload in parts (the state of parts is core/parts.py's): the part's
bytes are hashed as they are parsed, its rows stored chunk by chunk at the part's own row and
chunk ranges and queued as they are stored, as one upload's are.

A part is all or nothing: a part refused (a bad header, a limit, a cut connection, the job
cancelled) is dropped with every row, chunk and result of it, so the job and its other parts
are as they were, and the part can be sent again. The first part stored decides how every
later part is read (format, encoding, separator, text and id columns, kept columns): the
others are read with those, so one job never mixes two readings of its file."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from sqlalchemy import update

from reviewscore.core import jobs, parts
from reviewscore.core.db import session_scope
from reviewscore.core.errors import BadUploadError, ReviewscoreError
from reviewscore.core.ingest import ROW_NUMBER_ID, ParsedRow, Reviews, UploadOptions, open_reviews
from reviewscore.core.job_options import JobOptions
from reviewscore.core.model_registry import ModelInfo
from reviewscore.core.schema import Job
from reviewscore.core.settings import Settings
from reviewscore.core.uploads import (
    ChunkWriter,
    Record,
    ResultDestination,
    items_of,
    limits_from,
)

log = logging.getLogger(__name__)

# A storing part's request renews its claim this often; a claim silent for STALE_AFTER_S
# belongs to a request (an API process) that died, and the next send of the part takes it.
HEARTBEAT_S = 5.0
STALE_AFTER_S = 6 * HEARTBEAT_S


@dataclass(frozen=True)
class StoredPart:
    number: int
    rows: int
    sha256: str
    size_bytes: int
    already_stored: bool


class PartRefusedError(ReviewscoreError):
    """The part was refused; nothing of it was kept, and the job's other parts are unchanged."""

    def __init__(self, number: int, cause: ReviewscoreError) -> None:
        super().__init__(
            f"part {number} refused: {cause.message}; nothing of it was kept (the job and its "
            "other parts are unchanged): send it again once fixed"
        )
        self.status_code = cause.status_code


def create_parts_job(
    options: UploadOptions,
    *,
    model: ModelInfo,
    owner_key_id: int | None = None,
    destination: ResultDestination | None = None,
    keep_texts: bool = False,
    job_options: JobOptions | None = None,
) -> str:
    """A job that takes its file in parts: `uploading` until `complete`."""
    with session_scope() as session:
        job_id = jobs.create_job(
            session,
            model_name=model.name,
            model_version=model.version,
            filename=options.filename,
            # How the file reads is known from the first part stored (see _agree_on_reading).
            text_column=options.text_column or "",
            id_column=options.id_column,
            owner_key_id=owner_key_id,
            **(destination.job_fields() if destination else {}),
            keep_texts=keep_texts,
            **(job_options or JobOptions()).job_fields(),
            positive_from=options.positive_from,
        )
        session.execute(
            update(Job).where(Job.id == job_id).values(part_options=_options_json(options))
        )
    return job_id


def _options_json(options: UploadOptions) -> dict[str, Any]:
    values = dataclasses.asdict(options)
    values["keep_columns"] = list(options.keep_columns)
    return {k: v for k, v in values.items() if v not in (None, [], "")}


class _HashingReader(io.RawIOBase):
    """The part's bytes as the parser reads them, hashed and counted on the way."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.sha256.update(data)
        self.size += n
        return n

    def drain(self) -> None:
        """Reads what the parser left (a trailing newline, Parquet's footer already read)."""
        while data := self._raw.read(1 << 16):
            self.sha256.update(data)
            self.size += len(data)


def _reading_options(job: Job) -> UploadOptions:
    """How a part of this job is read: as the first stored part was, once there is one."""
    given = parts.options_of(job)
    given["keep_columns"] = tuple(given.get("keep_columns", ()))
    options = UploadOptions(**given)
    if job.input_format is None:
        return options
    return dataclasses.replace(
        options,
        format=job.input_format,
        encoding=job.encoding,
        delimiter=job.delimiter,
        text_column=job.text_column,
        id_column=job.id_column or ROW_NUMBER_ID,
        keep_columns=tuple(job.keep_columns or ()),
        label_column=job.label_column or options.label_column,
    )


def _agree_on_reading(job_id: str, reviews: Reviews) -> None:
    """The first part read records how the file reads; a later part must read the same way."""
    reading = {
        "input_format": reviews.format,
        "encoding": reviews.encoding,
        "delimiter": reviews.delimiter,
        "text_column": jobs.label(reviews.text_column),
        "id_column": jobs.label(reviews.id_column),
        "keep_columns": reviews.keep_columns or None,
        "label_column": jobs.label(reviews.label_column),
    }
    with session_scope() as session:
        session.execute(
            update(Job).where(Job.id == job_id, Job.input_format.is_(None)).values(**reading)
        )
        job = jobs.get_job(session, job_id)
        recorded = {name: getattr(job, name) for name in reading}
    differs = [name for name in reading if recorded[name] != reading[name]]
    if differs:
        name = differs[0]
        raise BadUploadError(
            f"it reads with {name} {reading[name]!r}, the job's other parts with "
            f"{recorded[name]!r}: every part must be a piece of the same file"
        )


def store_part(
    raw: BinaryIO,
    job_id: str,
    number: int,
    *,
    content_type: str | None,
    settings: Settings,
    enqueue: Callable[[str, int], None],
    owner_key_id: int | None = None,
) -> StoredPart:
    """Stores part `number` of a job in parts, or answers that the same bytes are stored."""
    parts.check_number(number)
    with session_scope(readonly=True) as session:
        job = parts.parts_job(session, job_id, owner_key_id)
        options = dataclasses.replace(_reading_options(job), content_type=content_type)
        existing = parts.get_part(session, job_id, number)
        stored = existing if existing is not None and existing.state == "stored" else None
        room = settings.max_rows_per_job - parts.stored_rows_elsewhere(session, job_id, number)
    body = _HashingReader(raw)
    if stored is not None:
        body.drain()
        if body.sha256.hexdigest() != stored.sha256:
            raise parts.PartConflictError(
                f"part {number} of job {job_id} is stored with other bytes (sha256 "
                f"{stored.sha256}); a stored part cannot be replaced"
            )
        return StoredPart(number, stored.rows, stored.sha256, stored.size_bytes or 0, True)
    token = parts.claim(job_id, number, STALE_AFTER_S)
    stop = threading.Event()
    beat = threading.Thread(
        target=_heartbeat, args=(job_id, number, token, stop), name=f"part-{job_id}-{number}"
    )
    beat.start()
    try:
        rows = _parse_and_store(body, job_id, number, options, room, settings, enqueue)
        body.drain()
        sha = body.sha256.hexdigest()
        with session_scope() as session:
            if not parts.mark_stored(
                session, job_id, number, token, sha256=sha, size=body.size, rows=rows
            ):
                raise parts.PartConflictError(
                    f"part {number} of job {job_id} was taken over by another request"
                )
    except ReviewscoreError as exc:
        _drop(job_id, number, token)
        if isinstance(exc, parts.PartConflictError):
            raise
        raise PartRefusedError(number, exc) from exc
    except BaseException:
        _drop(job_id, number, token)
        raise
    finally:
        stop.set()
        beat.join()
    return StoredPart(number, rows, sha, body.size, False)


def _parse_and_store(
    body: _HashingReader,
    job_id: str,
    number: int,
    options: UploadOptions,
    room: int,
    settings: Settings,
    enqueue: Callable[[str, int], None],
) -> int:
    limits = dataclasses.replace(
        limits_from(settings), max_rows=max(0, min(room, parts.MAX_PART_ROWS))
    )
    reviews = open_reviews(body, limits, options)  # type: ignore[arg-type]
    try:
        _agree_on_reading(job_id, reviews)
        offset = parts.first_row(number)
        items, spec = items_of(reviews, settings)
        writer = ChunkWriter(
            job_id, settings.chunk_size, enqueue, first_seq=parts.first_seq(number), spec=spec
        )
        for item in items:
            writer.add(_moved(item, offset))
        writer.flush()
    finally:
        reviews.close()
    if not writer.stored:
        raise BadUploadError("the part has a header but no data rows")
    return writer.stored


def _moved(item: ParsedRow | Record, offset: int) -> ParsedRow | Record:
    if isinstance(item, ParsedRow):
        return dataclasses.replace(item, row_num=item.row_num + offset)
    return item[0] + offset, item[1]


def _heartbeat(job_id: str, number: int, token: str, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        try:
            parts.heartbeat(job_id, number, token)
        except Exception:  # noqa: BLE001 - a missed beat is retried; STALE_AFTER_S is 6 beats
            log.warning("could not renew the claim of part %s of job %s", number, job_id)


def _drop(job_id: str, number: int, token: str) -> None:
    try:
        parts.drop(job_id, number, token)
    except Exception:  # noqa: BLE001 - the next send of the part drops it (its claim goes stale)
        log.exception("could not drop part %s of job %s", number, job_id)
