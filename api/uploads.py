"""Receiving an upload: the request body as a blocking stream for a worker thread, the content
type and the options resolved in one place (query, or form fields before the file; fields
after the file are refused), then the core's store_upload."""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.from_thread
from pydantic import BaseModel, Field
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect, Request

from api.errors import BusyError
from api.multipart import BodyReader, MultipartFileReader
from reviewscore.core import idempotency, part_uploads, webhooks
from reviewscore.core.celery_app import enqueue_chunk
from reviewscore.core.db import session_scope
from reviewscore.core.errors import BadUploadError, UnsupportedMediaError, UploadInterruptedError
from reviewscore.core.idempotency import HashingReader, RequestKey
from reviewscore.core.ingest import parse_keep_columns
from reviewscore.core.job_options import MAX_LABELS, JobOptions, job_options
from reviewscore.core.model_registry import get_model
from reviewscore.core.settings import get_settings
from reviewscore.core.uploads import (
    Preview,
    RequestRefusedError,
    ResultDestination,
    UploadOptions,
    preview_upload,
    store_upload,
)
from reviewscore.core.urls import check_url

# Raw (non-multipart) bodies accepted; the format is still decided by the content first.
RAW_TYPES = {
    b"text/csv",
    b"application/csv",
    b"text/plain",
    b"text/tab-separated-values",
    b"application/x-ndjson",
    b"application/ndjson",
    b"application/jsonl",
    b"application/x-jsonlines",
    b"application/json-lines",
    b"application/vnd.apache.parquet",
    b"application/x-parquet",
    b"application/parquet",
    b"application/gzip",
    b"application/x-gzip",
    b"application/octet-stream",
}


class UploadQuery(BaseModel):
    """Options of an upload, as query parameters (or as form fields placed before the file)."""

    text_column: str | None = Field(
        None,
        description="column (or JSON field / dotted path) holding the text; default: 'text', "
        "else 'review', 'review_text', 'content' (case-insensitive)",
    )
    id_column: str | None = Field(
        None,
        description="column holding the id; default: an id-like column (id, review_id, uuid, "
        "key, ...) if the file has one, else the 1-based row number; '@row' forces row numbers",
    )
    model: str | None = Field(None, description="an installed model; default if omitted")
    format: str | None = Field(
        None, description="csv, tsv, jsonl or parquet; default: detected from the content"
    )
    encoding: str | None = Field(
        None, description="the text encoding (utf-8, cp1252, utf-16...); default: detected"
    )
    delimiter: str | None = Field(
        None,
        description="CSV separator: , ; | or tab (comma, semicolon, pipe, tab); default: detected",
    )
    keep_columns: str | None = Field(
        None, description="input columns to copy next to the scores, comma-separated"
    )
    label_column: str | None = Field(
        None,
        description="column holding each row's own label, to evaluate the model against; "
        "default: 'label', else 'sentiment', 'polarity', 'rating', 'stars' if the file has one. "
        "Read as positive or negative from pos/neg, positive/negative, 1/0, true/false",
    )
    positive_from: float | None = Field(
        None,
        description="the labels are ratings: positive from this value up (7 for 1-10 stars, "
        "4 for 1-5)",
        allow_inf_nan=False,
    )
    filename: str | None = Field(
        None, description="the file's name, for a raw body (multipart sends its own)"
    )
    keep_texts: bool = Field(
        False,
        description="keep the review texts in the database once scored (by default each "
        "chunk's texts are dropped when it is done: ids, kept columns and results stay)",
    )
    result_url: str | None = Field(
        None,
        description="once the job is finished, PUT its results file here (a presigned "
        "object-store URL, say); must be under a prefix in REVIEWSCORE_URL_ALLOW",
    )
    result_format: str | None = Field(
        None, description="the format of the file PUT to result_url: csv (default), jsonl, parquet"
    )
    label: list[str] = Field(
        default_factory=list,
        description=f"a label of the job, key:value (repeat it, up to {MAX_LABELS}): shown as "
        "the job's `metadata`, and GET /v1/jobs?label=key:value finds the job",
    )
    deadline: str | None = Field(
        None,
        description="e.g. 30m, 2h, 1d: past it no chunk is handed out and the job ends "
        "`expired`, the rows done kept and downloadable",
    )
    results_expire_after: str | None = Field(
        None,
        description="how long the job and its results are kept once finished (e.g. 7d), at "
        "most the service's retention (REVIEWSCORE_JOB_RETENTION_DAYS)",
    )
    max_failed_fraction: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="e.g. 0.2: once more than this share of the job's rows failed, the job "
        "ends `failed` at once, saying so (the rows done are kept)",
    )
    callback_url: str | None = Field(
        None,
        description="once the job is finished, POST a signed completion event here (Standard "
        "Webhooks); default: the API key's; must be under a prefix in REVIEWSCORE_URL_ALLOW",
    )


OPTION_NAMES = tuple(UploadQuery.model_fields)


class UploadTooSlowError(UploadInterruptedError):
    """The client went silent, or sends slower than REVIEWSCORE_UPLOAD_MIN_BYTES_PER_S."""

    status_code = 408


_slots: dict[str, anyio.CapacityLimiter] = {}


@asynccontextmanager
async def upload_slot() -> AsyncIterator[anyio.CapacityLimiter]:
    """One of REVIEWSCORE_MAX_CONCURRENT_UPLOADS places, or a 503 with Retry-After at once,
    never a wait. Yields the uploads' own thread pool: a slow upload holds one of its threads,
    never one of the pool every `def` route (status, /readyz's neighbours) waits on."""
    limit = get_settings().max_concurrent_uploads
    if "places" not in _slots:
        _slots["places"] = anyio.CapacityLimiter(limit)
        _slots["threads"] = anyio.CapacityLimiter(limit)
    places = _slots["places"]
    try:
        places.acquire_nowait()
    except anyio.WouldBlock:
        raise BusyError(
            f"{limit} uploads are already in progress (REVIEWSCORE_MAX_CONCURRENT_UPLOADS); "
            "try again shortly",
            retry_after_s=10,
        ) from None
    try:
        yield _slots["threads"]
    finally:
        places.release()


class RequestBodyStream:
    """The request body, pulled chunk by chunk from a worker thread: the upload is parsed in a
    thread (CSV parsing and SQL are blocking) while the body arrives on the event loop.

    A client that sends nothing for REVIEWSCORE_UPLOAD_IDLE_TIMEOUT_S, or less than
    REVIEWSCORE_UPLOAD_MIN_BYTES_PER_S over that long, is cut off (408; rows already stored are
    kept, as for any interrupted upload). The rate counts only the time spent waiting for the
    client, so a server slowed down by its own database never blames the client."""

    def __init__(self, request: Request) -> None:
        self._chunks: AsyncIterator[bytes] = request.stream().__aiter__()
        settings = get_settings()
        self._idle_s = settings.upload_idle_timeout_s
        self._min_rate = settings.upload_min_bytes_per_s
        self._waited_s = 0.0
        self._window_bytes = 0

    def pull(self) -> bytes:
        """The next piece of the body, b"" at its end; call from a worker thread only."""
        try:
            return anyio.from_thread.run(self._next)
        except ClientDisconnect as exc:
            raise UploadInterruptedError("the client disconnected during the upload") from exc

    async def _next(self) -> bytes:
        started = anyio.current_time()
        try:
            with anyio.fail_after(self._idle_s):
                chunk = await self._chunks.__anext__()
        except StopAsyncIteration:
            return b""
        except TimeoutError:
            raise UploadTooSlowError(
                f"no data arrived for {self._idle_s:g} s (REVIEWSCORE_UPLOAD_IDLE_TIMEOUT_S)"
            ) from None
        self._waited_s += anyio.current_time() - started
        self._window_bytes += len(chunk)
        if self._waited_s >= self._idle_s:
            rate = self._window_bytes / self._waited_s
            if rate < self._min_rate:
                raise UploadTooSlowError(
                    f"the upload arrived at {rate:,.0f} bytes/s over {self._waited_s:.0f} s, "
                    f"under the minimum of {self._min_rate:,} (REVIEWSCORE_UPLOAD_MIN_BYTES_PER_S)"
                )
            self._waited_s, self._window_bytes = 0.0, 0
        return chunk


@dataclass(frozen=True)
class UploadSource:
    reader: io.RawIOBase
    options: UploadOptions
    model: str | None
    destination: ResultDestination | None = None
    keep_texts: bool = False
    job: JobOptions = JobOptions()

    def described(self) -> dict[str, Any]:
        """All the request asks for besides the file's bytes (what its sha256 starts with)."""
        return described(self.options, self.model, self.destination, self.keep_texts, self.job)


def described(
    options: UploadOptions,
    model: str | None,
    destination: ResultDestination | None,
    keep_texts: bool,
    job: JobOptions,
) -> dict[str, Any]:
    return {
        "options": dataclasses.asdict(options),
        "model": model,
        "destination": destination and dataclasses.asdict(destination),
        "keep_texts": keep_texts,
        "job": dataclasses.asdict(job),
    }


@dataclass(frozen=True)
class Created:
    """A job a POST /v1/jobs answers with; `replayed` when an earlier request with the same
    Idempotency-Key made it."""

    job_id: str
    replayed: bool = False


def given_options(query: UploadQuery) -> dict[str, Any]:
    """The options the query sets (a 0 is set; false, empty and absent are not)."""
    return {
        k: v
        for k, v in query.model_dump().items()
        if v is not None and v is not False and v != "" and v != []
    }


def terms(values: dict[str, Any]) -> JobOptions:
    """The job's labels, deadline, retention and failure limit from the resolved options."""
    labels = values.get("label")
    return job_options(
        labels=[labels] if isinstance(labels, str) else labels,
        deadline=values.get("deadline"),
        results_expire_after=values.get("results_expire_after"),
        max_failed_fraction=values.get("max_failed_fraction"),
        settings=get_settings(),
    )


RESULT_FORMATS = ("csv", "jsonl", "parquet")


def _flag(value: str | bool | None) -> bool:
    """A yes/no option from a form field or the query."""
    if isinstance(value, bool) or value is None:
        return bool(value)
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("", "0", "false", "no", "off"):
        return False
    raise BadUploadError(f"keep_texts must be true or false, not {value[:20]!r}", 422)


def result_destination(
    values: dict[str, Any], owner: int | None = None
) -> ResultDestination | None:
    """The checked result_url and its format, and the callback_url (the one sent, else the
    key's default), before any byte of the file is stored."""
    url, fmt = values.get("result_url"), values.get("result_format")
    settings = get_settings()
    callback = None
    if values.get("callback_url") or owner is not None:  # a key may name a default one
        with session_scope(readonly=True) as session:
            callback = webhooks.callback_for(session, values.get("callback_url"), owner, settings)
    if not url:
        if fmt:
            raise BadUploadError("result_format is given without a result_url", 422)
        return ResultDestination(None, callback_url=callback) if callback else None
    if fmt and fmt not in RESULT_FORMATS:
        raise BadUploadError(
            f"result_format {fmt[:40]!r} is not one of {', '.join(RESULT_FORMATS)}", 422
        )
    check_url(url, settings)
    return ResultDestination(url, fmt or "csv", callback)


def _charset(content_type: bytes | str | None) -> str | None:
    value = parse_options_header(content_type or "")[1].get(b"charset")
    return value.decode("latin-1") if value else None


def _refuse_late_options(fields: dict[str, str]) -> None:
    """Options sent after the file cannot change how it was read: refused, never ignored."""
    late = [name for name in fields if name in OPTION_NAMES]
    if late:
        first = late[0]
        raise RequestRefusedError(
            f"form field {first!r} came after the file, when the file had already been read: "
            f"send it before the file (curl -F {first}=... -F file=@reviews.csv) or in the "
            f"query (?{first}=...); nothing was kept"
        )


def _refuse_unknown(fields: dict[str, str]) -> None:
    unknown = [name for name in fields if name not in OPTION_NAMES]
    if unknown:
        raise BadUploadError(
            f"unknown form field {unknown[0][:40]!r}: the options are {', '.join(OPTION_NAMES)}",
            400,
        )


def _threshold(value: str | float | None) -> float | None:
    """positive_from from the query (a number already) or a form field (text)."""
    if value is None or isinstance(value, float | int):
        return value
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise BadUploadError(f"positive_from must be a number, not {value[:20]!r}", 422)
    return number


def _options(values: dict[str, Any], content_type: str | None) -> UploadOptions:
    return UploadOptions(
        filename=values.get("filename"),
        content_type=content_type,
        format=values.get("format"),
        text_column=values.get("text_column"),
        id_column=values.get("id_column"),
        encoding=values.get("encoding") or _charset(content_type),
        delimiter=values.get("delimiter"),
        keep_columns=parse_keep_columns(values.get("keep_columns")),
        label_column=values.get("label_column"),
        positive_from=_threshold(values.get("positive_from")),
    )


def json_is_not_an_upload() -> UnsupportedMediaError:
    """The answer to a JSON body, unless it names a source_url (api/sources.py)."""
    return UnsupportedMediaError(
        "a JSON body is not an upload: send reviews to POST /v1/score as "
        '{"reviews": [...]}, or a JSON Lines file as application/x-ndjson or as '
        "multipart field 'file'"
    )


def open_upload(
    body: RequestBodyStream, content_type: str, query: UploadQuery, owner: int | None = None
) -> UploadSource:
    """Picks the reader for the content type and resolves the options: the query wins over form
    fields sent before the file, which win over the charset of the file's content type."""
    ctype, params = parse_options_header(content_type)
    given = given_options(query)
    if ctype == b"multipart/form-data":
        if not params.get(b"boundary"):
            raise BadUploadError("the multipart/form-data content type has no boundary", 400)
        multipart = MultipartFileReader(
            body.pull, params[b"boundary"], check_trailer=_refuse_late_options
        )
        multipart.wait_for_file()
        _refuse_unknown(multipart.fields)
        values: dict[str, Any] = {k: v for k, v in multipart.fields.items() if v}
        if "label" in values:  # one form field per pair
            values["label"] = multipart.repeated["label"]
        values = values | given
        values["filename"] = multipart.filename or values.get("filename")
        return UploadSource(
            reader=multipart,
            options=_options(values, multipart.content_type),
            model=values.get("model"),
            destination=result_destination(values, owner),
            keep_texts=_flag(values.get("keep_texts")),
            job=terms(values),
        )
    if ctype in RAW_TYPES:
        return UploadSource(
            reader=BodyReader(body.pull),
            options=_options(given, content_type),
            model=query.model,
            destination=result_destination(given, owner),
            keep_texts=query.keep_texts,
            job=terms(given),
        )
    if ctype == b"application/json":
        raise json_is_not_an_upload()
    raise UnsupportedMediaError(
        f"unsupported content type {ctype.decode('latin-1')[:80] or 'none'!r}: send the file as "
        "multipart/form-data field 'file', or as a raw body typed text/csv, "
        "text/tab-separated-values, application/x-ndjson, application/vnd.apache.parquet or "
        "application/gzip"
    )


def receive_upload(
    body: RequestBodyStream,
    content_type: str,
    query: UploadQuery,
    owner: int | None,
    key: RequestKey | None = None,
) -> Created:
    """Stores an upload as a job and returns it (blocking: run it in a worker thread). With an
    Idempotency-Key already bound, the file is only read to compare it: the same request
    answers the earlier job, another one is refused."""
    settings = get_settings()
    source = open_upload(body, content_type, query, owner)
    with session_scope(readonly=True) as session:
        model = get_model(session, source.model, settings.default_model)
    # The file's bytes as the parser reads them, after what the request asks for: the sha256
    # an Idempotency-Key is bound with (multipart boundaries, which differ per send, left out).
    reader = HashingReader(
        source.reader,  # type: ignore[arg-type]
        idempotency.fingerprint("upload", source.described()),
    )
    found = idempotency.earlier(key) if key is not None else None
    if key is not None and found is not None:
        return Created(idempotency.answer(key, found, reader.drain()), replayed=True)
    job_id = store_upload(
        reader,  # type: ignore[arg-type]
        source.options,
        model=model,
        settings=settings,
        enqueue=enqueue_chunk,
        owner_key_id=owner,
        destination=source.destination,
        keep_texts=source.keep_texts,
        job_options=source.job,
    )
    sha256 = reader.drain()
    if key is None:
        return Created(job_id)
    return Created(*idempotency.bind(key, sha256, job_id))


def receive_preview(
    body: RequestBodyStream, content_type: str, query: UploadQuery, owner: int | None = None
) -> Preview:
    """How an upload would be read (blocking: run it in a worker thread); nothing is stored,
    and the body is read only as far as needed."""
    source = open_upload(body, content_type, query, owner)
    return preview_upload(source.reader, source.options, settings=get_settings())  # type: ignore[arg-type]


def create_parts_job(
    query: UploadQuery, owner: int | None, key: RequestKey | None = None
) -> Created:
    """A job that takes its file in parts (PUT /v1/jobs/{id}/parts/{n}), read with these
    options; blocking: run it in a worker thread."""
    settings = get_settings()
    with session_scope(readonly=True) as session:
        model = get_model(session, query.model, settings.default_model)
    given = given_options(query)
    options = _options(given, None)
    destination = result_destination(given, owner)
    job = terms(given)
    asked = described(options, query.model, destination, query.keep_texts, job)
    sha256 = idempotency.fingerprint("parts", asked).hexdigest()
    found = idempotency.earlier(key) if key is not None else None
    if key is not None and found is not None:
        return Created(idempotency.answer(key, found, sha256), replayed=True)
    job_id = part_uploads.create_parts_job(
        options,
        model=model,
        owner_key_id=owner,
        destination=destination,
        keep_texts=query.keep_texts,
        job_options=job,
    )
    if key is None:
        return Created(job_id)
    return Created(*idempotency.bind(key, sha256, job_id))


def receive_part(
    body: RequestBodyStream,
    content_type: str,
    job_id: str,
    number: int,
    owner: int | None,
) -> part_uploads.StoredPart:
    """Stores one part from a raw request body (blocking: run it in a worker thread)."""
    ctype, _ = parse_options_header(content_type)
    if ctype == b"multipart/form-data":
        raise UnsupportedMediaError(
            "a part is sent as the raw body (any type but multipart/form-data, e.g. "
            "application/octet-stream): it is a piece of the file itself"
        )
    return part_uploads.store_part(
        BodyReader(body.pull),  # type: ignore[arg-type]
        job_id,
        number,
        content_type=content_type or None,
        settings=get_settings(),
        enqueue=enqueue_chunk,
        owner_key_id=owner,
    )
