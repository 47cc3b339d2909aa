"""A job from a source_url instead of a body: the URL and the upload's options from the query
or a JSON body, the file fetched by the core (reviewscore/core/fetch.py), then stored as an
upload is."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ConfigDict, Field, ValidationError
from python_multipart.multipart import parse_options_header
from starlette.requests import Request

from api import uploads
from api.uploads import Created, UploadQuery
from reviewscore.core import idempotency
from reviewscore.core.db import session_scope
from reviewscore.core.errors import BadUploadError, UploadTooLargeError
from reviewscore.core.fetch import fetched
from reviewscore.core.idempotency import RequestKey
from reviewscore.core.model_registry import get_model
from reviewscore.core.settings import get_settings
from reviewscore.core.uploads import store_upload

# A JSON body names a file, it is not one: anything longer is a mistake.
MAX_JSON_BYTES = 64 * 1024
SOURCE_URL_DOC = (
    "fetch the file from this URL instead of sending it: http(s) (presigned object-store URLs "
    "too) or file://, under a prefix the operator lists in REVIEWSCORE_URL_ALLOW"
)


class SourceRequest(UploadQuery):
    """POST /v1/jobs with a JSON body: the file's URL and the upload's options."""

    model_config = ConfigDict(extra="forbid")

    source_url: str = Field(description=SOURCE_URL_DOC)


def with_source_body(upload_body: dict[str, Any]) -> dict[str, Any]:
    """The upload's OpenAPI request body, plus the JSON one naming a source_url."""
    json_body = {"application/json": {"schema": SourceRequest.model_json_schema()}}
    return upload_body | {"content": upload_body["content"] | json_body}


@dataclass(frozen=True)
class Source:
    url: str
    options: UploadQuery


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    return bool(length and length != "0") or "transfer-encoding" in request.headers


async def _read_json(request: Request) -> Any:
    data = bytearray()
    async for piece in request.stream():
        data += piece
        if len(data) > MAX_JSON_BYTES:
            raise UploadTooLargeError(
                f"a JSON body naming a source_url is at most {MAX_JSON_BYTES:,} bytes"
            )
    try:
        return json.loads(data)
    except ValueError:
        return None


def _from_json(body: dict[str, Any], query: UploadQuery, source_url: str | None) -> Source:
    if source_url is not None:
        if "source_url" in body:
            raise BadUploadError("source_url is in both the query and the JSON body", 400)
        body = body | {"source_url": source_url}
    try:
        given = SourceRequest.model_validate(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise BadUploadError(f"JSON body, {where}: {error['msg']}", 422) from None
    # The query wins over the body, as it wins over form fields for an upload.
    options = given.model_dump(exclude={"source_url"}) | uploads.given_options(query)
    return Source(url=given.source_url, options=UploadQuery(**options))


async def requested_source(
    request: Request, query: UploadQuery, source_url: str | None
) -> Source | None:
    """The source the request names, or None when the body is the file (an upload)."""
    ctype = parse_options_header(request.headers.get("content-type", ""))[0]
    if ctype == b"application/json":
        body = await _read_json(request)
        if isinstance(body, dict) and (source_url is not None or "source_url" in body):
            return _from_json(body, query, source_url)
        if source_url is None:
            raise uploads.json_is_not_an_upload()
        raise BadUploadError("the JSON body is not a JSON object of the upload's options", 400)
    if source_url is None:
        return None
    if _has_body(request):
        raise BadUploadError(
            "the request has both a body and a source_url: send the file as the body, or name "
            "it in source_url with no body",
            400,
        )
    return Source(url=source_url, options=query)


def receive_source(source: Source, owner: int | None, key: RequestKey | None = None) -> Created:
    """Fetches the source and stores it as a job; returns it (blocking: run it in a worker
    thread). The model, any result_url and the job's terms are checked first, so a wrong one
    fails before any byte is fetched; a request already made under its Idempotency-Key
    answers its job without fetching anything."""
    settings = get_settings()
    values = uploads.given_options(source.options)
    destination = uploads.result_destination(values, owner)
    terms = uploads.terms(values)
    with session_scope(readonly=True) as session:
        model = get_model(session, source.options.model, settings.default_model)
    # The URL whole (a presigned URL's signature too): only the sha256 is stored.
    sha256 = idempotency.fingerprint("source", {"url": source.url, "options": values}).hexdigest()
    found = idempotency.earlier(key) if key is not None else None
    if key is not None and found is not None:
        return Created(idempotency.answer(key, found, sha256), replayed=True)
    with fetched(source.url, settings) as found_file, found_file.path.open("rb") as raw:
        values.setdefault("filename", found_file.filename)
        job_id = store_upload(
            raw,
            uploads._options(values, found_file.content_type),  # the upload's own option rules
            model=model,
            settings=settings,
            # Looked up at call time: the fast tests replace the uploads' enqueue.
            enqueue=uploads.enqueue_chunk,
            owner_key_id=owner,
            destination=destination,
            source_url=source.url,
            keep_texts=source.options.keep_texts,
            job_options=terms,
        )
    if key is None:
        return Created(job_id)
    return Created(*idempotency.bind(key, sha256, job_id))
