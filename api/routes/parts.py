"""Uploads in parts: a job created with POST /v1/jobs?parts=true takes its file as numbered
parts, sent in any order, at once, to any API process, then `complete`d with their count."""

from __future__ import annotations

from functools import partial
from typing import Annotated

import anyio
from fastapi import APIRouter, Path, Request, Response

from api.routes.jobs import JobId, Owner, view, within_quota
from api.schemas import (
    CompleteRequest,
    JobView,
    PartList,
    PartView,
    StoredPartView,
    error_responses,
)
from api.uploads import RequestBodyStream, receive_part, upload_slot
from reviewscore.core import jobs, parts, webhooks
from reviewscore.core.db import session_scope

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
PartNumber = Annotated[int, Path(ge=1, le=parts.MAX_PARTS, description="1 to 10,000")]

PART_DOC = """Store part `n` of a job created with `POST /v1/jobs?parts=true`. The body (raw,
not multipart) is a self-contained piece of the file holding whole records: a CSV or TSV part
begins with the header row, a JSON Lines part is whole lines, a Parquet part is a Parquet file;
each may be gzipped. Parts may come in any order and at once; rows keep the input order, part
by part. The first part stored decides how the file reads (format, encoding, separator,
columns): the others are read the same way. 201 once stored; the same bytes sent again answer
200 with `already_stored` and store nothing; other bytes for a stored part, or a part being
stored by another request right now, 409. A refused part keeps nothing, and the job and its
other parts are unchanged: send it again."""


@router.put(
    "/{job_id}/parts/{number}",
    status_code=201,
    response_model=StoredPartView,
    description=PART_DOC,
    responses={
        200: {"model": StoredPartView, "description": "these bytes were stored before"},
        **error_responses(400, 404, 408, 409, 413, 415, 422, 429, 503),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def put_part(
    request: Request, response: Response, job_id: JobId, number: PartNumber, owner: Owner
) -> StoredPartView:
    await anyio.to_thread.run_sync(within_quota, owner, False)
    async with upload_slot() as threads:
        body = RequestBodyStream(request)
        content_type = request.headers.get("content-type", "")
        stored = await anyio.to_thread.run_sync(
            partial(receive_part, body, content_type, job_id, number, owner),
            limiter=threads,
        )
    if stored.already_stored:
        response.status_code = 200
    return StoredPartView(
        number=stored.number,
        rows=stored.rows,
        sha256=stored.sha256,
        size_bytes=stored.size_bytes,
        already_stored=stored.already_stored,
    )


@router.get("/{job_id}/parts", response_model=PartList, responses=error_responses(404, 422, 503))
def list_parts(job_id: JobId, owner: Owner) -> PartList:
    """The parts stored (or being stored), with their rows and the sha256 of their bytes: what
    a client resuming an upload asks to know which parts to send again."""
    with session_scope(readonly=True) as session:
        job = jobs.get_job(session, job_id, owner)
        found = parts.list_parts(session, job_id)
        total = job.parts_total
    return PartList(
        job_id=job_id,
        parts=[
            PartView(
                number=p.number,
                state=p.state,
                rows=p.rows,
                sha256=p.sha256,
                size_bytes=p.size_bytes,
            )
            for p in found
        ],
        parts_total=total,
    )


@router.post(
    "/{job_id}/complete", response_model=JobView, responses=error_responses(400, 404, 409, 422, 503)
)
def complete_upload(job_id: JobId, owner: Owner, body: CompleteRequest) -> JobView:
    """Closes the upload in parts once parts 1..`parts` are all stored (409 naming the missing
    ones, or parts past the count, otherwise); the job completes once they are scored. Calling
    it again with the same count answers the job."""
    with session_scope() as session:
        parts.complete(session, job_id, body.parts, owner)
    if jobs.try_complete(job_id):
        webhooks.send_soon(job_id)
    return view(job_id, owner)
