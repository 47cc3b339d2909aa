"""A job as the service shows it: the body of GET /v1/jobs/{id}, and of the completion webhook
(core/webhooks.py) that announces it finished; both read it from here."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, computed_field
from sqlalchemy.orm import Session

from reviewscore.core import results
from reviewscore.core.schema import Job, JobStatus
from reviewscore.core.urls import shown


def _as_utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes even for timezone-aware columns; they are UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


UtcTime = Annotated[datetime, BeforeValidator(_as_utc)]


class Histogram(BaseModel):
    edges: list[float] = Field(description="bin edges of p_positive, 0.0 to 1.0")
    counts: list[int] = Field(description="scored rows per bin; the last bin includes 1.0")


class FigureView(BaseModel):
    value: float | None = Field(description="null when undefined (no rows, or one class only)")
    low: float | None = Field(description="the 95 % interval's lower end")
    high: float | None
    interval: str = Field(
        description="wilson (proportions; F1 through the Jaccard index), hanley-mcneil (ROC "
        "AUC) or bootstrap (ECE, 1,000 resamples)"
    )


class CalibrationBinView(BaseModel):
    low: float
    high: float
    count: int
    mean_p: float | None = Field(description="the bin's mean p_positive")
    share_positive: FigureView = Field(description="the share of its rows labeled positive")


class LengthBinView(BaseModel):
    words_from: int
    words_to: int | None = Field(description="null: open-ended")
    count: int
    accuracy: FigureView


class EvaluationView(BaseModel):
    """The scores against the rows' own labels (the label column), over the scored rows with a
    usable label; p_positive >= 0.5 predicts positive. Every figure has a 95 % interval."""

    rows: int = Field(description="scored rows with a usable label: what the figures cover")
    left_out: dict[str, int] = Field(
        description="scored rows left out: no_label (empty) and unreadable_label"
    )
    accuracy: FigureView
    precision: FigureView
    recall: FigureView
    f1: FigureView
    roc_auc: FigureView
    ece: FigureView = Field(description="expected calibration error over the 10 bins below")
    confusion: dict[str, int] = Field(
        description="true_positive, false_positive, true_negative, false_negative"
    )
    calibration: list[CalibrationBinView] = Field(
        description="the reliability diagram: per p_positive bin, the share labeled positive"
    )
    by_length: list[LengthBinView] = Field(description="accuracy by review length in words")


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
    evaluation: EvaluationView | None = Field(
        None, description="for a job whose file has a label column (label_column); else null"
    )


# A URL as a job shows it: its query string (a presigned URL's signature) is never echoed.
Shown = Annotated[str | None, BeforeValidator(lambda v: None if v is None else shown(v))]


class JobView(BaseModel):
    """A job as the server reports it. `finished` is the one answer to "is it done?": true once
    the status is final (succeeded, failed, cancelled or expired) and nothing about the job
    will change. Times are UTC (ISO 8601 with Z), taken from the database's clock."""

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
    label_column: str | None = Field(
        None, description="the column of the rows' own labels: the summary evaluates against it"
    )
    positive_from: float | None = Field(
        None, description="the labels are ratings, positive from this value up"
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
    callback_url: Shown = Field(
        None,
        description="where the job's completion webhook is POSTed (no query string); its "
        "attempts: GET /v1/jobs/{id}/deliveries",
    )
    metadata: dict[str, str] = Field(
        default_factory=dict,
        validation_alias="label_pairs",
        description="the job's labels (label=key:value on upload); GET /v1/jobs?label= finds it",
    )
    deadline_at: UtcTime | None = Field(
        None,
        description="past it no chunk is handed out and the job ends `expired` (from `deadline`)",
    )
    max_failed_fraction: float | None = Field(
        None, description="past this share of failed rows the job ends `failed` early"
    )
    results_expire_after_s: float | None = Field(
        None,
        validation_alias="retention_s",
        description="seconds the job and its results are kept once finished "
        "(results_expire_after; null: the service's retention)",
    )
    total: int | None = Field(
        validation_alias="total_rows", description="rows in the job; null while uploading"
    )
    received: int = Field(validation_alias="received_rows")
    scored: int = Field(validation_alias="scored_rows")
    failed: int = Field(validation_alias="failed_rows")
    device: str | None
    error: str | None = Field(
        description="why the job ends (or ended) failed or expired; the rows done are kept"
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


def summary_view(session: Session, job_id: str, final: bool) -> SummaryView:
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
        evaluation=None
        if summary.evaluation is None
        else EvaluationView.model_validate(dataclasses.asdict(summary.evaluation)),
    )


def full_view(session: Session, job: Job) -> JobView:
    """The job as GET /v1/jobs/{id} gives it: once finished, with its results summary."""
    view = JobView.model_validate(job)
    if view.finished:
        view.summary = summary_view(session, job.id, final=True)
    return view
