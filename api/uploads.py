"""Receiving an upload: the request body as a blocking stream for a worker thread, the content
type and the options resolved in one place, then the core's store_upload."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import anyio.from_thread
from pydantic import BaseModel, Field
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect, Request

from api.errors import BusyError
from api.multipart import BodyReader, MultipartFileReader
from reviewscore.core.celery_app import enqueue_chunk
from reviewscore.core.errors import BadUploadError, UnsupportedMediaError, UploadInterruptedError
from reviewscore.core.model_registry import get_model
from reviewscore.core.settings import get_settings
from reviewscore.core.uploads import UploadOptions, store_upload

RAW_CSV_TYPES = {
    b"text/csv",
    b"application/csv",
    b"text/plain",
    b"application/gzip",
    b"application/x-gzip",
    b"application/octet-stream",
}


class UploadQuery(BaseModel):
    """Options of an upload, as query parameters (or as form fields placed before the file)."""

    text_column: str | None = Field(None, description="default: 'text', else 'review'")
    id_column: str | None = Field(None, description="default: the 1-based row number")
    model: str | None = Field(None, description="an installed model; default if omitted")
    encoding: str | None = Field(None, description="the file's encoding (default UTF-8)")


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


def _charset(content_type: bytes | str | None) -> str | None:
    value = parse_options_header(content_type or "")[1].get(b"charset")
    return value.decode("latin-1") if value else None


def open_upload(body: RequestBodyStream, content_type: str, query: UploadQuery) -> UploadSource:
    """Picks the reader for the content type and resolves the options: the query wins over form
    fields sent before the file, which win over the charset of the file's content type."""
    ctype, params = parse_options_header(content_type)
    if ctype == b"multipart/form-data":
        if not params.get(b"boundary"):
            raise BadUploadError("the multipart/form-data content type has no boundary", 400)
        multipart = MultipartFileReader(body.pull, params[b"boundary"])
        multipart.wait_for_file()
        fields = multipart.fields
        return UploadSource(
            reader=multipart,
            options=UploadOptions(
                filename=multipart.filename,
                text_column=query.text_column or fields.get("text_column") or None,
                id_column=query.id_column or fields.get("id_column") or None,
                encoding=query.encoding
                or fields.get("encoding")
                or _charset(multipart.content_type),
            ),
            model=query.model or fields.get("model") or None,
        )
    if ctype in RAW_CSV_TYPES:
        return UploadSource(
            reader=BodyReader(body.pull),
            options=UploadOptions(
                text_column=query.text_column,
                id_column=query.id_column,
                encoding=query.encoding or _charset(content_type),
            ),
            model=query.model,
        )
    raise UnsupportedMediaError(
        f"unsupported content type {ctype.decode('latin-1') or 'none'!r}: send the CSV as "
        "multipart/form-data field 'file', or as a text/csv or application/gzip body"
    )


def receive_upload(
    body: RequestBodyStream, content_type: str, query: UploadQuery, owner: int | None
) -> str:
    """Stores an upload as a job and returns its id (blocking: run it in a worker thread)."""
    settings = get_settings()
    source = open_upload(body, content_type, query)
    model = get_model(settings.models_dir, source.model, settings.default_model)
    return store_upload(
        source.reader,  # type: ignore[arg-type]
        source.options,
        model=model,
        settings=settings,
        enqueue=enqueue_chunk,
        owner_key_id=owner,
    )
