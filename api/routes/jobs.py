"""Bulk jobs: upload a file of reviews, follow its progress, read its summary, download results,
cancel or delete it."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache, partial
from typing import Annotated, Literal

import anyio
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import StreamingResponse

from api.auth import current_key_id
from api.schemas import (
    Histogram,
    JobList,
    JobView,
    PreviewRow,
    PreviewView,
    SummaryView,
    error_responses,
)
from api.sources import SOURCE_URL_DOC, receive_source, requested_source, with_source_body
from api.uploads import (
    OPTION_NAMES,
    RequestBodyStream,
    UploadQuery,
    create_parts_job,
    receive_preview,
    receive_upload,
    upload_slot,
)
from reviewscore.core import jobs, quotas, results
from reviewscore.core.db import session_scope
from reviewscore.core.errors import BadUploadError, JobStateError
from reviewscore.core.exports import EXPORTS, ExportRequest
from reviewscore.core.settings import get_settings

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
JobId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="a job id (32 hex digits)")]
Owner = Annotated[int | None, Depends(current_key_id)]

UPLOAD_DOC = """Upload a file of reviews as multipart field `file` (or as the raw body): CSV (the
separator and text encoding detected), TSV, JSON Lines (`.jsonl`, one object per line) or
Parquet, each plain or gzipped. The format is detected from the content, then the file name
and content type (`format` overrides). Options come as query parameters, or as form fields
placed before the file; an option after the file is refused (400). Rows are stored and queued
for scoring while the upload streams; the answer (202) comes once the whole file is stored.
Or, with no body, `source_url` (in the query, or a JSON body with the options) names the file
for the service to fetch, from a URL prefix the operator allows (REVIEWSCORE_URL_ALLOW)."""


_BINARY = {"schema": {"type": "string", "format": "binary"}}
UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    **{name: {"type": "string"} for name in OPTION_NAMES if name != "filename"},
                    "file": {"type": "string", "format": "binary"},
                },
            }
        },
        "text/csv": _BINARY,
        "text/tab-separated-values": _BINARY,
        "application/x-ndjson": _BINARY,
        "application/vnd.apache.parquet": _BINARY,
        "application/gzip": _BINARY,
    },
}


@router.post(
    "",
    status_code=202,
    response_model=JobView,
    description=UPLOAD_DOC,
    responses={
        201: {"model": JobView, "description": "a job in parts (parts=true), uploading"},
        **error_responses(400, 408, 409, 413, 415, 422, 429, 502, 503),
    },
    # The body is streamed by hand, so FastAPI cannot infer it: document it here. It is left
    # out for a job in parts (parts=true), and is JSON or absent with a source_url.
    openapi_extra={"requestBody": with_source_body(UPLOAD_BODY) | {"required": False}},
)
async def create_job(
    request: Request,
    response: Response,
    owner: Owner,
    query: Annotated[UploadQuery, Query()],
    parts: Annotated[
        bool,
        Query(
            description="create the job with no body, to send its file in parts (PUT "
            "/v1/jobs/{id}/parts/{n}, then POST /v1/jobs/{id}/complete): answers 201"
        ),
    ] = False,
    source_url: Annotated[str | None, Query(description=SOURCE_URL_DOC)] = None,
) -> JobView:
    if parts and source_url is not None:
        raise BadUploadError("parts=true and source_url exclude each other: choose one", 400)
    await anyio.to_thread.run_sync(within_quota, owner, True)
    if parts:
        if request.headers.get("content-length", "0") != "0" or "transfer-encoding" in (
            request.headers
        ):
            raise BadUploadError(
                "a job in parts is created with no body: send the file as its parts, "
                "PUT /v1/jobs/{id}/parts/1, 2, ...",
                400,
            )
        job_id = await anyio.to_thread.run_sync(create_parts_job, query, owner)
        response.status_code = 201
        return await anyio.to_thread.run_sync(view, job_id, owner)
    # The body arrives on the event loop; parsing and SQL run in a thread of the uploads' own
    # pool (see api/uploads.py upload_slot), never in the one every `def` route waits on.
    async with upload_slot() as threads:
        source = await requested_source(request, query, source_url)
        if source is not None:  # fetched in this pool too: a slow server holds an upload's place
            receive = partial(receive_source, source, owner)
        else:
            body = RequestBodyStream(request)
            content_type = request.headers.get("content-type", "")
            receive = partial(receive_upload, body, content_type, query, owner)
        job_id = await anyio.to_thread.run_sync(receive, limiter=threads)
    return await anyio.to_thread.run_sync(view, job_id, owner)


# Preview answers list at most this many columns, each cut to this length.
PREVIEW_COLUMNS = 200
PREVIEW_CHARS = 300


# Two segments, so no job route (/{job_id}, /{job_id}/results...) claims the path for
# another method: GET on it is a 405, not a malformed job id.
@router.post(
    "/upload/preview",
    response_model=PreviewView,
    responses=error_responses(400, 408, 413, 415, 422, 503),
    openapi_extra={"requestBody": UPLOAD_BODY},
)
async def preview_job(
    request: Request, _owner: Owner, query: Annotated[UploadQuery, Query()]
) -> PreviewView:
    """How a file would be read, without storing anything: its format, encoding, separator,
    columns, the text and id columns chosen, and the first rows; or the same refusal an upload
    would get. The first MiB of a text file is enough (a cut last row is fine); Parquet needs
    the whole file."""
    async with upload_slot() as threads:  # a slow preview holds an upload's place, as uploads do
        body = RequestBodyStream(request)
        content_type = request.headers.get("content-type", "")
        found = await anyio.to_thread.run_sync(
            partial(receive_preview, body, content_type, query), limiter=threads
        )
    return PreviewView(
        format=found.format,
        encoding=found.encoding,
        delimiter=found.delimiter,
        columns=[name[:PREVIEW_CHARS] for name in found.columns[:PREVIEW_COLUMNS]],
        text_column=found.text_column,
        id_column=found.id_column,
        keep_columns=found.keep_columns,
        rows=[
            PreviewRow(id=r.ext_id, text=r.text[:PREVIEW_CHARS], error=r.error) for r in found.rows
        ],
        error=found.error,
    )


def within_quota(owner: int | None, new_job: bool) -> None:
    """A 429 unless the caller's key is under its quotas (core/quotas.py): for a new job, both
    of them; for a part of a job, its queued rows. Checked before any byte is read."""
    if owner is None:
        return
    check = quotas.check_new_job if new_job else quotas.check_more_rows
    with session_scope(readonly=True) as session:
        check(session, owner, get_settings())


def view(job_id: str, owner: int | None = None) -> JobView:
    with session_scope(readonly=True) as session:
        return JobView.model_validate(jobs.get_job(session, job_id, owner))


def _summary_view(job_id: str, final: bool) -> SummaryView:
    with session_scope(readonly=True) as session:
        summary = results.summarize(session, job_id)
    return SummaryView(
        final=final,
        rows=summary.rows,
        scored=summary.scored,
        failed=summary.failed,
        not_scored_yet=summary.not_scored_yet,
        labels=summary.labels,
        share_positive=summary.share_positive,
        histogram=Histogram(edges=summary.histogram_edges, counts=summary.histogram_counts),
        failed_by_reason=summary.failed_by_reason,
    )


@lru_cache(maxsize=256)
def _final_summary(job_id: str, finished_at: datetime) -> SummaryView:
    # A finished job's results never change: its summary is read from the database once per
    # API process (finished_at in the key keeps a re-used id from ever matching).
    return _summary_view(job_id, final=True)


def summary_of(job: JobView) -> SummaryView:
    if job.finished and job.finished_at is not None:
        return _final_summary(job.id, job.finished_at)
    return _summary_view(job.id, final=False)


@router.get("", response_model=JobList, responses=error_responses(422, 503))
def list_jobs(
    owner: Owner,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    # Bounded: a huge offset overflows the databases' 64-bit integers (a 500, not a 422).
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> JobList:
    with session_scope(readonly=True) as session:
        found, total = jobs.list_jobs(session, limit=limit, offset=offset, owner_key_id=owner)
        views = [JobView.model_validate(j) for j in found]
    return JobList(jobs=views, total=total, limit=limit, offset=offset)


@router.get("/{job_id}", response_model=JobView, responses=error_responses(404, 422, 503))
def get_job(job_id: JobId, owner: Owner) -> JobView:
    """The job; once it is finished, with its results `summary` (lists leave it out)."""
    job = view(job_id, owner)
    if job.finished:
        job.summary = summary_of(job)
    return job


@router.get(
    "/{job_id}/summary", response_model=SummaryView, responses=error_responses(404, 422, 503)
)
def get_summary(job_id: JobId, owner: Owner) -> SummaryView:
    """Counts per label, the share positive, a 10-bin histogram of p_positive and failed rows
    by reason; for an unfinished job, over the rows done so far (`final` false)."""
    return summary_of(view(job_id, owner))


@router.post(
    "/{job_id}/cancel", response_model=JobView, responses=error_responses(404, 409, 422, 503)
)
def cancel_job(job_id: JobId, owner: Owner) -> JobView:
    with session_scope() as session:
        jobs.cancel_job(session, job_id, owner)
    return view(job_id, owner)


@router.delete("/{job_id}", status_code=204, responses=error_responses(404, 409, 422, 503))
def delete_job(job_id: JobId, owner: Owner) -> Response:
    with session_scope() as session:
        jobs.delete_job(session, job_id, owner)
    return Response(status_code=204)


@router.get(
    "/{job_id}/results",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {
                "text/csv": {},
                "application/x-ndjson": {},
                "application/vnd.apache.parquet": {},
            }
        },
        **error_responses(404, 409, 422, 503),
    },
)
def get_results(
    job_id: JobId,
    owner: Owner,
    format: Annotated[Literal["csv", "jsonl", "parquet"], Query()] = "csv",
    guard: Annotated[
        bool,
        Query(
            description="CSV only: neutralise cells a spreadsheet would run as formulas "
            "(a leading '); numbers are never changed. guard=false gives the values as stored"
        ),
    ] = True,
    partial: Annotated[bool, Query(description="allow results of an unfinished job")] = False,
) -> StreamingResponse:
    job = view(job_id, owner)
    if not (job.finished or partial):
        raise JobStateError(
            f"job {job_id} is {job.status} ({job.done:,} of "
            f"{job.total if job.total is not None else '?'} rows done): wait for it to finish, "
            "or pass partial=true to get the rows done so far (the others say 'not scored yet')"
        )
    export = EXPORTS[format]
    request = ExportRequest(job_id, job.keep_columns or [], guard=guard)
    return StreamingResponse(
        export.pieces(request),
        media_type=export.media_type,
        headers={"Content-Disposition": f'attachment; filename="{job_id}-results.{format}"'},
    )
