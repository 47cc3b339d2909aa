"""Receiving an upload: the request body as a blocking stream for a worker thread, the content
type and the options resolved in one place, then the core's store_upload."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio.from_thread
from pydantic import BaseModel, Field
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect, Request

from api.multipart import BodyReader, MultipartFileReader
from reviewscore.core.celery_app import enqueue_chunk
from reviewscore.core.db import session_scope
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


class RequestBodyStream:
    """The request body, pulled chunk by chunk from a worker thread: the upload is parsed in a
    thread (CSV parsing and SQL are blocking) while the body arrives on the event loop."""

    def __init__(self, request: Request) -> None:
        self._chunks: AsyncIterator[bytes] = request.stream().__aiter__()

    def pull(self) -> bytes:
        """The next piece of the body, b"" at its end; call from a worker thread only."""
        try:
            return anyio.from_thread.run(self._next)
        except ClientDisconnect as exc:
            raise UploadInterruptedError("the client disconnected during the upload") from exc

    async def _next(self) -> bytes:
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            return b""


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
    with session_scope(readonly=True) as session:
        model = get_model(session, source.model, settings.default_model)
    return store_upload(
        source.reader,  # type: ignore[arg-type]
        source.options,
        model=model,
        settings=settings,
        enqueue=enqueue_chunk,
        owner_key_id=owner,
    )
