"""Bulk jobs: upload a CSV, follow its progress, download results, cancel or delete it."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Annotated, Literal

import anyio
import anyio.from_thread
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect

from api.auth import current_key_id
from api.multipart import BodyReader, MultipartFileReader
from api.schemas import JobList, JobView, error_responses
from reviewscore.core import jobs
from reviewscore.core.celery_app import enqueue_chunk
from reviewscore.core.db import session_scope
from reviewscore.core.errors import (
    BadUploadError,
    JobStateError,
    UnsupportedMediaError,
    UploadInterruptedError,
)
from reviewscore.core.model_registry import get_model
from reviewscore.core.schema import JobStatus
from reviewscore.core.settings import get_settings
from reviewscore.core.uploads import UploadOptions, store_upload

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
JobId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="a job id (32 hex digits)")]
Owner = Annotated[int | None, Depends(current_key_id)]
RAW_CSV_TYPES = {
    b"text/csv",
    b"application/csv",
    b"text/plain",
    b"application/gzip",
    b"application/x-gzip",
    b"application/octet-stream",
}
RESULT_COLUMNS = ["id", "p_positive", "label", "model_version", "truncated", "error"]
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

UPLOAD_DOC = """Upload a CSV (`.csv` or `.csv.gz`) as multipart field `file` (or as a raw `text/csv` /
`application/gzip` body). Options come as query parameters, or as form fields placed before
the file. Rows are stored and queued for scoring while the upload streams; the answer (202)
comes once the whole file is stored."""


_BINARY = {"schema": {"type": "string", "format": "binary"}}
UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "text_column": {"type": "string"},
                    "id_column": {"type": "string"},
                    "model": {"type": "string"},
                    "encoding": {"type": "string"},
                    "file": {"type": "string", "format": "binary"},
                },
            }
        },
        "text/csv": _BINARY,
        "application/gzip": _BINARY,
    },
}


@router.post(
    "",
    status_code=202,
    response_model=JobView,
    description=UPLOAD_DOC,
    responses=error_responses(400, 413, 415, 422),
    # The body is streamed by hand, so FastAPI cannot infer it: document it here.
    openapi_extra={"requestBody": UPLOAD_BODY},
)
async def create_job(
    request: Request,
    owner: Owner,
    text_column: Annotated[str | None, Query(description="default: 'text', else 'review'")] = None,
    id_column: Annotated[str | None, Query(description="default: the 1-based row number")] = None,
    model: Annotated[
        str | None, Query(description="an installed model; default if omitted")
    ] = None,
    encoding: Annotated[
        str | None, Query(description="the file's encoding (default UTF-8)")
    ] = None,
) -> JobView:
    settings = get_settings()
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    body = request.stream().__aiter__()

    def pull() -> bytes:
        try:
            return anyio.from_thread.run(body.__anext__)  # type: ignore[arg-type]
        except StopAsyncIteration:
            return b""
        except ClientDisconnect as exc:
            raise UploadInterruptedError("the client disconnected during the upload") from exc

    if ctype == b"multipart/form-data":
        if not params.get(b"boundary"):
            raise BadUploadError("the multipart/form-data content type has no boundary", 400)
        reader: MultipartFileReader | BodyReader = MultipartFileReader(pull, params[b"boundary"])
    elif ctype in RAW_CSV_TYPES:
        reader = BodyReader(pull)
    else:
        raise UnsupportedMediaError(
            f"unsupported content type {ctype.decode('latin-1') or 'none'!r}: send the CSV as "
            "multipart/form-data field 'file', or as a text/csv or application/gzip body"
        )

    def ingest() -> str:
        # An encoding named in the request wins over the charset a Content-Type declares.
        options = UploadOptions(
            text_column=text_column, id_column=id_column, encoding=encoding or charset(params)
        )
        if isinstance(reader, MultipartFileReader):
            reader.wait_for_file()
            fields = reader.fields
            options = UploadOptions(
                filename=reader.filename,
                text_column=text_column or fields.get("text_column") or None,
                id_column=id_column or fields.get("id_column") or None,
                encoding=encoding
                or fields.get("encoding")
                or charset(parse_options_header(reader.content_type or "")[1]),
            )
            chosen = model or fields.get("model") or None
        else:
            chosen = model
        info = get_model(settings.models_dir, chosen, settings.default_model)
        return store_upload(
            reader,  # type: ignore[arg-type]
            options,
            model=info,
            settings=settings,
            enqueue=enqueue_chunk,
            owner_key_id=owner,
        )

    job_id = await anyio.to_thread.run_sync(ingest)
    with session_scope(readonly=True) as session:
        return JobView.of(jobs.get_job(session, job_id))


@router.get("", response_model=JobList, responses=error_responses(422))
def list_jobs(
    owner: Owner,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    # Bounded: a huge offset overflows the databases' 64-bit integers (a 500, not a 422).
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> JobList:
    with session_scope(readonly=True) as session:
        found, total = jobs.list_jobs(session, limit=limit, offset=offset, owner_key_id=owner)
        return JobList(jobs=[JobView.of(j) for j in found], total=total, limit=limit, offset=offset)


@router.get("/{job_id}", response_model=JobView, responses=error_responses(404, 422))
def get_job(job_id: JobId, owner: Owner) -> JobView:
    with session_scope(readonly=True) as session:
        return JobView.of(jobs.get_job(session, job_id, owner))


@router.post("/{job_id}/cancel", response_model=JobView, responses=error_responses(404, 409, 422))
def cancel_job(job_id: JobId, owner: Owner) -> JobView:
    with session_scope() as session:
        return JobView.of(jobs.cancel_job(session, job_id, owner))


@router.delete("/{job_id}", status_code=204, responses=error_responses(404, 409, 422))
def delete_job(job_id: JobId, owner: Owner) -> Response:
    with session_scope() as session:
        jobs.delete_job(session, job_id, owner)
    return Response(status_code=204)


def charset(content_type_params: dict[bytes, bytes]) -> str | None:
    value = content_type_params.get(b"charset")
    return value.decode("latin-1") if value else None


def _safe_cell(value: str) -> str:
    # Spreadsheets run cells that start like a formula; a leading quote keeps them text.
    return "'" + value if value.startswith(FORMULA_PREFIXES) else value


def _csv_lines(job_id: str) -> Iterator[bytes]:
    out = io.StringIO()
    # CRLF records (RFC 4180): with a bare "\n" terminator the writer would leave a "\r" inside
    # a field unquoted, and readers would split the record there.
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(RESULT_COLUMNS)
    for n, line in enumerate(jobs.iter_results(job_id), start=1):
        writer.writerow(
            [
                _safe_cell(line.id),
                "" if line.p_positive is None else f"{line.p_positive:.6f}",
                line.label or "",
                line.model_version or "",
                "" if line.truncated is None else str(line.truncated).lower(),
                _safe_cell(line.error or ""),
            ]
        )
        if n % 2000 == 0:
            yield out.getvalue().encode()
            out.seek(0)
            out.truncate()
    yield out.getvalue().encode()


def _jsonl_lines(job_id: str) -> Iterator[bytes]:
    batch: list[str] = []
    for line in jobs.iter_results(job_id):
        batch.append(
            json.dumps(
                {
                    "id": line.id,
                    "p_positive": line.p_positive,
                    "label": line.label,
                    "model_version": line.model_version,
                    "truncated": line.truncated,
                    "error": line.error,
                },
                ensure_ascii=False,
            )
        )
        if len(batch) >= 2000:
            yield ("\n".join(batch) + "\n").encode()
            batch = []
    if batch:
        yield ("\n".join(batch) + "\n").encode()


@router.get(
    "/{job_id}/results",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/csv": {}, "application/x-ndjson": {}}},
        **error_responses(404, 409, 422),
    },
)
def get_results(
    job_id: JobId,
    owner: Owner,
    format: Annotated[Literal["csv", "jsonl"], Query()] = "csv",
    partial: Annotated[bool, Query(description="allow results of an unfinished job")] = False,
) -> StreamingResponse:
    with session_scope(readonly=True) as session:
        job = jobs.get_job(session, job_id, owner)
        status = JobStatus(job.status)
        done, total = job.scored_rows + job.failed_rows, job.total_rows
    if not partial and (
        status not in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)
        or (total is not None and done < total and status != JobStatus.cancelled)
    ):
        raise JobStateError(
            f"job {job_id} is {status} ({done:,} of {total if total is not None else '?'} rows "
            "done): wait for it to finish, or pass partial=true to get the rows done so far "
            "(the others say 'not scored yet')"
        )
    lines = _csv_lines(job_id) if format == "csv" else _jsonl_lines(job_id)
    media = "text/csv; charset=utf-8" if format == "csv" else "application/x-ndjson"
    filename = f"{job_id}-results.{format}"
    return StreamingResponse(
        lines,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
