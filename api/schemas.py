"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from api.worker_models import WorkerModelState

# The job's view is the core's (a webhook's body is the same document); routes take it here.
from reviewscore.core.job_view import JobView, UtcTime
from reviewscore.core.job_view import SummaryView as SummaryView
from reviewscore.core.schema import PartState


class ScoreRequest(BaseModel):
    reviews: list[str] = Field(
        ..., min_length=1, examples=[["I love this movie! It is amazing.", "Bad movie."]]
    )
    model: str | None = Field(None, description="an installed model's name; default if omitted")


class ScoreResult(BaseModel):
    p_positive: float
    label: Literal["positive", "negative"]
    truncated: bool


class ScoreResponse(BaseModel):
    model: str
    model_version: str
    results: list[ScoreResult]


class PreviewRow(BaseModel):
    id: str | None = Field(description="the row's id as read (null: it would be the row number)")
    text: str = Field(description="the text as read, cut to 300 characters")
    error: str | None


class PreviewView(BaseModel):
    """How an upload would be read: what a job would record, and its first rows."""

    format: str
    encoding: str | None
    delimiter: str | None
    columns: list[str] = Field(
        description="the file's columns (JSON Lines: the first object's fields)"
    )
    text_column: str
    id_column: str | None
    keep_columns: list[str]
    label_column: str | None = None
    rows: list[PreviewRow]
    error: str | None = Field(
        description="what stopped the sample short (a bad row, a file sent cut short), if anything"
    )


class PartView(BaseModel):
    """One part of an upload in parts, as stored (or being stored)."""

    number: int
    state: PartState
    rows: int = Field(description="rows stored from the part (0 while storing)")
    sha256: str | None = Field(description="of the part's bytes as sent; null while storing")
    size_bytes: int | None


class StoredPartView(BaseModel):
    number: int
    state: Literal["stored"] = "stored"
    rows: int
    sha256: str
    size_bytes: int
    already_stored: bool = Field(
        description="true when the same bytes were stored before: nothing was stored again"
    )


class PartList(BaseModel):
    job_id: str
    parts: list[PartView]
    parts_total: int | None = Field(
        description="the count `complete` was called with; null until the upload is complete"
    )


class CompleteRequest(BaseModel):
    parts: int = Field(ge=1, le=10_000, description="the number of parts, numbered 1..parts")


class WebhookEventView(BaseModel):
    """A job's completion webhook: `id` is its `webhook-id` on every attempt."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    type: str = Field(description="job.succeeded, job.failed, job.cancelled or job.expired")
    created_at: UtcTime
    attempts: int
    next_attempt_at: UtcTime | None = Field(
        validation_alias="next_at", description="when it is tried next; null once settled"
    )
    delivered_at: UtcTime | None = Field(description="when a 2xx answer took it")
    error: str | None = Field(description="why the last attempt failed")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def state(self) -> Literal["pending", "delivered", "gave_up"]:
        if self.delivered_at is not None:
            return "delivered"
        return "pending" if self.next_attempt_at is not None else "gave_up"


class DeliveryView(BaseModel):
    """One attempt to POST the webhook."""

    model_config = ConfigDict(from_attributes=True)

    attempt: int
    sent_at: UtcTime
    status_code: int | None = Field(description="the receiver's answer; null if none came")
    error: str | None
    duration_ms: int


class DeliveryList(BaseModel):
    job_id: str
    event: WebhookEventView | None = Field(
        description="null until the job is finished, and for a job with no callback_url"
    )
    attempts: list[DeliveryView]


class JobList(BaseModel):
    jobs: list[JobView]
    total: int
    limit: int
    offset: int


class ModelView(BaseModel):
    name: str
    version: str
    architecture: str
    default: bool
    test_accuracy: float | None
    max_tokens: int | None


class ModelList(BaseModel):
    models: list[ModelView]


class Readiness(BaseModel):
    ready: bool
    # "ready", "degraded" (ready, but a worker reports a model error or workers serve different
    # versions of a model: see `problems`), or "unready".
    status: str = "ready"
    database: str
    redis: str
    workers: list[str]
    devices: list[str] = []
    worker_models: dict[str, WorkerModelState] = {}
    problems: list[str] = []


class ErrorBody(BaseModel):
    """Every error answer: `detail` is one sentence saying what is wrong (for a malformed
    request: the field and the problem)."""

    detail: str


ERROR_MEANINGS = {
    400: "the request body is malformed, or the client went away mid-upload",
    401: "no API key, or an unknown or revoked one (only when REVIEWSCORE_ENV=production)",
    404: "no such job (or not yours)",
    408: "the upload went silent, or sent slower than the minimum rate",
    409: "the job is not in a state that allows this",
    413: "the upload is over a size or row limit",
    415: "the body is not a CSV content type",
    429: "the API key is at one of its quotas (`detail` names it, the key's use and the "
    "limit): try again after `Retry-After` seconds",
    422: "invalid parameters, or a file that cannot be read as the CSV needed (or a source_url "
    "refused, or answered with an error)",
    502: "the source_url's server failed, or went away past the retries",
    503: "a part is unavailable (the database, Redis, the workers; `detail` names it), or too many "
    "uploads at once: try again after `Retry-After` seconds",
    504: "no worker answered in time",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` documenting the error answers an operation can give."""
    return {
        code: {"model": ErrorBody, "description": ERROR_MEANINGS[code]} for code in (401, *codes)
    }


class UsageView(BaseModel):
    """The caller's use against its quotas (GET /v1/usage); the limits are null with auth off."""

    key_id: int | None = Field(description="the caller's key, null with auth off")
    queued_rows: int = Field(description="rows received and not yet scored, in jobs not finished")
    unfinished_jobs: int = Field(description="jobs not finished (uploading, queued or running)")
    max_queued_rows: int | None = Field(description="the key's quota of queued rows")
    max_unfinished_jobs: int | None = Field(description="the key's quota of unfinished jobs")
    weight: float = Field(description="the key's share of the workers next to other keys")


class TrainRequest(BaseModel):
    """POST /v1/models/train: a new model from the labeled rows of finished jobs."""

    model_config = ConfigDict(extra="forbid")

    job_ids: list[Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]] = Field(
        min_length=1,
        max_length=20,
        description="finished jobs of yours, uploaded with label_column and keep_texts=true",
    )
    name: str | None = Field(
        None,
        max_length=63,
        description="the new model's name (default: labels-<run id>): 1-63 lowercase letters, "
        "digits, '.', '_' or '-'; not a shipped model's",
    )
    with_imdb: bool = Field(False, description="train on IMDB's train split too")
    make_default: bool = Field(
        False, description="make the new model the default (otherwise the default stays)"
    )
    architecture: Literal["nbsvm"] = "nbsvm"


class TrainingRunView(BaseModel):
    id: str
    status: str = Field(description="queued, running, succeeded or failed")
    finished: bool
    progress: float = Field(description="0..1")
    stage: str | None = Field(description="what the worker is doing now")
    model_name: str
    model_version: str | None = Field(description="the published version, once succeeded")
    job_ids: list[str]
    with_imdb: bool
    make_default: bool
    architecture: str
    error: str | None
    report: dict[str, Any] | None = Field(
        description="the new model and the default model on the held-out rows: accuracy with "
        "a 95 % Wilson interval each, and their paired difference"
    )
    created_at: UtcTime
    started_at: UtcTime | None
    finished_at: UtcTime | None
