"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, computed_field

from reviewscore.core.schema import JobStatus


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
    database: str
    redis: str
    workers: list[str]
    devices: list[str] = []


class ErrorBody(BaseModel):
    """Every error answer: `detail` says what is wrong (for a malformed request, FastAPI's list
    of field errors)."""

    detail: str | list[dict[str, Any]]


ERROR_MEANINGS = {
    400: "the request body is malformed, or the client went away mid-upload",
    401: "no API key, or an unknown or revoked one (only when REVIEWSCORE_ENV=production)",
    404: "no such job (or not yours)",
    408: "the upload went silent, or sent slower than the minimum rate",
    409: "the job is not in a state that allows this",
    413: "the upload is over a size or row limit",
    415: "the body is not a CSV content type",
    422: "invalid parameters, or a file that cannot be read as the CSV needed",
    503: "a part is unavailable (the database, Redis, the workers; `detail` names it), or too many "
    "uploads at once: try again after `Retry-After` seconds",
    504: "no worker answered in time",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` documenting the error answers an operation can give."""
    return {
        code: {"model": ErrorBody, "description": ERROR_MEANINGS[code]} for code in (401, *codes)
    }
