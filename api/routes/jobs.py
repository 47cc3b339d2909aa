"""Bulk jobs: upload a file of reviews, follow its progress, read its summary, download results,
cancel or delete it."""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from functools import lru_cache, partial
from typing import Annotated, Literal

import anyio
from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse

from api.auth import current_key_id
from api.schemas import (
    DeliveryList,
    DeliveryView,
    JobList,
    JobView,
    PreviewRow,
    PreviewView,
    SummaryView,
    WebhookEventView,
    error_responses,
)
from api.sources import SOURCE_URL_DOC, receive_source, requested_source, with_source_body
from api.uploads import (
    OPTION_NAMES,
    Created,
    RequestBodyStream,
    UploadQuery,
    create_parts_job,
    receive_preview,
    receive_upload,
    upload_slot,
)
from reviewscore.core import idempotency, jobs, quotas, review, webhooks
from reviewscore.core.db import session_scope
from reviewscore.core.errors import BadUploadError, JobStateError
from reviewscore.core.exports import EXPORTS, ExportRequest
from reviewscore.core.job_options import label_filter
from reviewscore.core.job_view import summary_view
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
for the service to fetch, from a URL prefix the operator allows (REVIEWSCORE_URL_ALLOW).
With an `Idempotency-Key` header, the same key and request (options and file) within 24 h
answer the job the first one made, with the same status and `Idempotent-Replayed: true`;
another request under the same key is refused (422)."""

IDEMPOTENCY_DOC = (
    "any string up to 255 characters (a UUID, say), per API key: the same key with the same "
    "request within 24 h answers the same job; with another request, a 422"
)


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
    idempotency_key: Annotated[
        str | None, Header(alias=idempotency.HEADER, description=IDEMPOTENCY_DOC)
    ] = None,
) -> JobView:
    if parts and source_url is not None:
        raise BadUploadError("parts=true and source_url exclude each other: choose one", 400)
    key = idempotency.request_key(idempotency_key, owner)
    await anyio.to_thread.run_sync(_within_quota_unless_replayed, owner, key)
    if parts:
        if request.headers.get("content-length", "0") != "0" or "transfer-encoding" in (
            request.headers
        ):
            raise BadUploadError(
                "a job in parts is created with no body: send the file as its parts, "
                "PUT /v1/jobs/{id}/parts/1, 2, ...",
                400,
            )
        created = await anyio.to_thread.run_sync(create_parts_job, query, owner, key)
        response.status_code = 201
        return await _answer(created, response, owner)
    # The body arrives on the event loop; parsing and SQL run in a thread of the uploads' own
    # pool (see api/uploads.py upload_slot), never in the one every `def` route waits on.
    async with upload_slot() as threads:
        source = await requested_source(request, query, source_url)
        if source is not None:  # fetched in this pool too: a slow server holds an upload's place
            receive = partial(receive_source, source, owner, key)
        else:
            body = RequestBodyStream(request)
            content_type = request.headers.get("content-type", "")
            receive = partial(receive_upload, body, content_type, query, owner, key)
        created = await anyio.to_thread.run_sync(receive, limiter=threads)
    return await _answer(created, response, owner)


async def _answer(created: Created, response: Response, owner: int | None) -> JobView:
    if created.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return await anyio.to_thread.run_sync(view, created.job_id, owner)


# Preview answers list at most this many columns, each cut to this length.
log = logging.getLogger(__name__)
# How long a DELETE's answer waits for the job's rows to go (the job is gone for every reader
# before); a bigger job's last batches go after it.
DELETE_WAIT_S = 10.0
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
            partial(receive_preview, body, content_type, query, _owner), limiter=threads
        )
    return PreviewView(
        format=found.format,
        encoding=found.encoding,
        delimiter=found.delimiter,
        columns=[name[:PREVIEW_CHARS] for name in found.columns[:PREVIEW_COLUMNS]],
        text_column=found.text_column,
        id_column=found.id_column,
        keep_columns=found.keep_columns,
        label_column=found.label_column,
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


def _within_quota_unless_replayed(owner: int | None, key: idempotency.RequestKey | None) -> None:
    # A request sent again under its Idempotency-Key answers the job it made: no new work, so
    # no quota to pass.
    if key is None or idempotency.earlier(key) is None:
        within_quota(owner, True)


def view(job_id: str, owner: int | None = None) -> JobView:
    with session_scope(readonly=True) as session:
        return JobView.model_validate(jobs.get_job(session, job_id, owner))


def _summary_view(job_id: str, final: bool) -> SummaryView:
    with session_scope(readonly=True) as session:
        return summary_view(session, job_id, final)


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
    # A list, not list | None: a query parameter is never null, and an anyOf with null makes
    # schema checkers expect refusals the query string cannot express.
    label: Annotated[
        list[str],
        Query(
            description="only jobs with this label, key:value (or key, for any value); "
            "repeated, jobs with all of them"
        ),
    ] = [],  # noqa: B006 - FastAPI copies a parameter's default per request
) -> JobList:
    """Recent jobs, newest first; `label` keeps those labelled so."""
    wanted = [label_filter(given) for given in label]
    with session_scope(readonly=True) as session:
        found, total = jobs.list_jobs(
            session, limit=limit, offset=offset, owner_key_id=owner, labels=wanted
        )
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
    by reason, and for a job with labels its evaluation; for an unfinished job, over the rows
    done so far (`final` false)."""
    return summary_of(view(job_id, owner))


@router.post(
    "/{job_id}/cancel", response_model=JobView, responses=error_responses(404, 409, 422, 503)
)
def cancel_job(job_id: JobId, owner: Owner) -> JobView:
    with session_scope() as session:
        jobs.cancel_job(session, job_id, owner)
    webhooks.send_soon(job_id)
    return view(job_id, owner)


@router.get(
    "/{job_id}/deliveries", response_model=DeliveryList, responses=error_responses(404, 422, 503)
)
def list_deliveries(job_id: JobId, owner: Owner) -> DeliveryList:
    """The job's completion webhook (to its callback_url) and every attempt to POST it, oldest
    first: the event is null until the job is finished, or if it has no callback_url."""
    with session_scope(readonly=True) as session:
        jobs.get_job(session, job_id, owner)
        found = webhooks.deliveries(session, job_id)
    if found is None:
        return DeliveryList(job_id=job_id, event=None, attempts=[])
    event, attempts = found
    return DeliveryList(
        job_id=job_id,
        event=WebhookEventView.model_validate(event),
        attempts=[DeliveryView.model_validate(a) for a in attempts],
    )


def _erase(job_id: str) -> None:
    try:
        jobs.erase(job_id)
    except Exception:  # noqa: BLE001 - the job stays marked deleted: the sweeper finishes it
        log.warning("could not remove job %s's rows yet; the sweeper will", job_id, exc_info=True)


@router.delete("/{job_id}", status_code=204, responses=error_responses(404, 409, 422, 503))
def delete_job(job_id: JobId, owner: Owner) -> Response:
    jobs.mark_deleted(job_id, owner)
    # A big job's rows take a while to go (batches): the answer waits DELETE_WAIT_S at most,
    # the job being gone for every reader already; the rest goes on in this process (or, if
    # it stops, the sweeper finishes it).
    eraser = threading.Thread(target=_erase, args=(job_id,), name=f"erase-{job_id}")
    eraser.start()
    eraser.join(DELETE_WAIT_S)
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


REVIEW_DOC = """The scored rows a person should look at first: `order=uncertain` (the default) the
`n` nearest p_positive 0.5; `order=disagree` (a job with labels) those where the model and
the row's label disagree, most confident first. As CSV or JSON Lines (id, p_positive,
predicted, label, model_version, text), or `format=labelstudio`: a JSON array of Label Studio
tasks with the model's prediction, for a project with the labeling config `<View><Text
name="text" value="$text"/><Choices name="sentiment" toName="text" choice="single"><Choice
value="Positive"/><Choice value="Negative"/></Choices></View>`. The texts are there only if
the job kept them (keep_texts=true); Label Studio tasks need them (else 409)."""


@router.get(
    "/{job_id}/review",
    response_class=Response,
    description=REVIEW_DOC,
    responses={
        200: {"content": {"text/csv": {}, "application/x-ndjson": {}, "application/json": {}}},
        **error_responses(404, 409, 422, 503),
    },
)
def get_review(
    job_id: JobId,
    owner: Owner,
    n: Annotated[int, Query(ge=1, le=review.MAX_ROWS, description="how many rows")] = 200,
    order: Annotated[Literal["uncertain", "disagree"], Query()] = "uncertain",
    format: Annotated[Literal["csv", "jsonl", "labelstudio"], Query()] = "csv",
) -> Response:
    view(job_id, owner)  # a 404 for a job that is not there (or not yours)
    with session_scope(readonly=True) as session:
        rows = review.review_rows(session, job_id, n, order)
    extension = "json" if format == "labelstudio" else format
    return Response(
        review.WRITERS[format](rows),
        media_type=review.MEDIA_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="{job_id}-review.{extension}"'},
    )
