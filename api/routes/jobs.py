"""Bulk jobs: upload a CSV, follow its progress, download results, cancel or delete it."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Literal

import anyio
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import StreamingResponse

from api.auth import current_key_id
from api.exports import EXPORTS
from api.schemas import JobList, JobView, error_responses
from api.uploads import RequestBodyStream, UploadQuery, receive_upload, upload_slot
from reviewscore.core import jobs
from reviewscore.core.db import session_scope
from reviewscore.core.errors import JobStateError

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
JobId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="a job id (32 hex digits)")]
Owner = Annotated[int | None, Depends(current_key_id)]

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
    responses=error_responses(400, 408, 409, 413, 415, 422, 503),
    # The body is streamed by hand, so FastAPI cannot infer it: document it here.
    openapi_extra={"requestBody": UPLOAD_BODY},
)
async def create_job(
    request: Request, owner: Owner, query: Annotated[UploadQuery, Query()]
) -> JobView:
    # The body arrives on the event loop; parsing and SQL run in a thread of the uploads' own
    # pool (see api/uploads.py upload_slot), never in the one every `def` route waits on.
    async with upload_slot() as threads:
        body = RequestBodyStream(request)
        content_type = request.headers.get("content-type", "")
        job_id = await anyio.to_thread.run_sync(
            partial(receive_upload, body, content_type, query, owner), limiter=threads
        )
    return await anyio.to_thread.run_sync(view, job_id, owner)


def view(job_id: str, owner: int | None = None) -> JobView:
    with session_scope(readonly=True) as session:
        return JobView.model_validate(jobs.get_job(session, job_id, owner))


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
    return view(job_id, owner)


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
        200: {"content": {"text/csv": {}, "application/x-ndjson": {}}},
        **error_responses(404, 409, 422, 503),
    },
)
def get_results(
    job_id: JobId,
    owner: Owner,
    format: Annotated[Literal["csv", "jsonl"], Query()] = "csv",
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
    return StreamingResponse(
        export.lines(job_id),
        media_type=export.media_type,
        headers={"Content-Disposition": f'attachment; filename="{job_id}-results.{format}"'},
    )
