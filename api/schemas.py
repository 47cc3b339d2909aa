"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, computed_field

from api.worker_models import WorkerModelState
from reviewscore.core.schema import JobStatus, PartState
from reviewscore.core.urls import shown


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


def _as_utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes even for timezone-aware columns; they are UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


UtcTime = Annotated[datetime, BeforeValidator(_as_utc)]


class Histogram(BaseModel):
    edges: list[float] = Field(description="bin edges of p_positive, 0.0 to 1.0")
    counts: list[int] = Field(description="scored rows per bin; the last bin includes 1.0")


class SummaryView(BaseModel):
    """What a job's results add up to; `final` once the job is finished (then it never
    changes), else it covers the rows done so far."""

    final: bool
    rows: int
    scored: int
    failed: int
    not_scored_yet: int
    labels: dict[str, int] = Field(description="scored rows per predicted label")
    share_positive: float | None = Field(description="positive / scored; null if none scored")
    histogram: Histogram
    failed_by_reason: dict[str, int] = Field(
        description="failed rows by error, numbers in messages replaced by N; top 20"
    )


# A URL as a job shows it: its query string (a presigned URL's signature) is never echoed.
Shown = Annotated[str | None, BeforeValidator(lambda v: None if v is None else shown(v))]


class JobView(BaseModel):
    """A job as the server reports it. `finished` is the one answer to "is it done?": true once
    the status is final (succeeded, failed or cancelled) and nothing about the job will change.
    Times are UTC (ISO 8601 with Z), taken from the database's clock."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    status: JobStatus
    finished: bool
    model: str = Field(validation_alias="model_name")
    model_version: str
    filename: str | None
    text_column: str
    id_column: str | None
    format: str | None = Field(
        None, validation_alias="input_format", description="csv, tsv, jsonl or parquet"
    )
    encoding: str | None = Field(None, description="the text encoding the file was read with")
    delimiter: str | None = Field(None, description="the CSV separator the file was read with")
    keep_columns: list[str] | None = Field(
        None, description="input columns copied next to the scores in the results"
    )
    in_parts: bool = Field(
        False, description="uploaded in parts (POST /v1/jobs?parts=true); see GET .../parts"
    )
    parts_total: int | None = Field(
        None, description="the part count the upload in parts was completed with"
    )
    source_url: Shown = Field(None, description="where the input was fetched from")
    result_url: Shown = Field(
        None, description="where the results are PUT once the job is finished (no query string)"
    )
    result_format: str | None = None
    keep_texts: bool = Field(False, description="the review texts are kept once scored")
    delivered_at: UtcTime | None = Field(
        None, description="when the results were taken by result_url"
    )
    delivery_attempts: int = 0
    delivery_error: str | None = Field(
        None, description="why the last PUT to result_url failed; retried with backoff"
    )
    total: int | None = Field(
        validation_alias="total_rows", description="rows in the job; null while uploading"
    )
    received: int = Field(validation_alias="received_rows")
    scored: int = Field(validation_alias="scored_rows")
    failed: int = Field(validation_alias="failed_rows")
    device: str | None
    error: str | None = Field(
        description="why the job ends (or ended) failed; its received rows are still scored"
    )
    created_at: UtcTime
    updated_at: UtcTime
    upload_finished_at: UtcTime | None
    started_at: UtcTime | None
    finished_at: UtcTime | None
    last_done_at: UtcTime | None = Field(exclude=True)
    summary: SummaryView | None = Field(
        None,
        description="on GET /v1/jobs/{id} once the job is finished (null in lists and before; "
        "GET /v1/jobs/{id}/summary gives it for an unfinished job too)",
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def done(self) -> int:
        return self.scored + self.failed

    @computed_field  # type: ignore[prop-decorator]
    @property
    def rate(self) -> float | None:
        """Rows finished per second, from the start of scoring to the last chunk done."""
        end = self.finished_at or self.last_done_at
        if self.started_at is None or end is None or not self.done:
            return None
        return self.done / max((end - self.started_at).total_seconds(), 1e-3)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def eta_seconds(self) -> float | None:
        rate = self.rate
        if self.finished or self.total is None or not rate:
            return None
        return max(self.total - self.done, 0) / rate

    @computed_field  # type: ignore[prop-decorator]
    @property
    def results_url(self) -> str:
        return f"/v1/jobs/{self.id}/results"


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
