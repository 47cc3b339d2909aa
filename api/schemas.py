"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from reviewscore.core.schema import Job, utcnow


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


class JobView(BaseModel):
    id: str
    status: str
    model: str
    model_version: str
    filename: str | None
    text_column: str
    id_column: str | None
    total: int | None = Field(description="rows in the job; null while the upload is running")
    received: int
    scored: int
    failed: int
    done: int
    rate: float | None = Field(description="rows finished per second since scoring started")
    eta_seconds: float | None
    device: str | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    upload_finished_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    results_url: str

    @classmethod
    def of(cls, job: Job) -> JobView:
        done = job.scored_rows + job.failed_rows
        rate = eta = None
        if job.started_at is not None and done:
            end = job.finished_at or utcnow()
            elapsed = max((_aware(end) - _aware(job.started_at)).total_seconds(), 1e-3)
            rate = done / elapsed
            if job.total_rows is not None and job.finished_at is None:
                eta = max(job.total_rows - done, 0) / rate
        return cls(
            id=job.id,
            status=job.status,
            model=job.model_name,
            model_version=job.model_version,
            filename=job.filename,
            text_column=job.text_column,
            id_column=job.id_column,
            total=job.total_rows,
            received=job.received_rows,
            scored=job.scored_rows,
            failed=job.failed_rows,
            done=done,
            rate=rate,
            eta_seconds=eta,
            device=job.device,
            error=job.error,
            created_at=job.created_at,
            updated_at=job.updated_at,
            upload_finished_at=job.upload_finished_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            results_url=f"/v1/jobs/{job.id}/results",
        )


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes even for timezone-aware columns; they are UTC.
    from datetime import UTC

    return value if value.tzinfo else value.replace(tzinfo=UTC)


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
    409: "the job is not in a state that allows this",
    413: "the upload is over a size or row limit",
    415: "the body is not a CSV content type",
    422: "invalid parameters, or a file that cannot be read as the CSV needed",
    503: "no worker or broker to do the work",
    504: "no worker answered in time",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` documenting the error answers an operation can give."""
    return {
        code: {"model": ErrorBody, "description": ERROR_MEANINGS[code]} for code in (401, *codes)
    }
