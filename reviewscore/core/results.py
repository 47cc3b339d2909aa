"""A job's results: as a stream in input order (read page by page in short transactions), and
as a summary (counts per label, a histogram of p_positive, failed rows by reason)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import BigInteger, case, cast, func, null, select
from sqlalchemy.orm import Session

from reviewscore.core import parts
from reviewscore.core.db import session_scope
from reviewscore.core.errors import ReviewscoreError
from reviewscore.core.evaluation import LENGTH_BINS, SCORE_SCALE, Evaluation, evaluate_cells
from reviewscore.core.ingest.labels import NEGATIVE, POSITIVE, UNREADABLE
from reviewscore.core.schema import InputRow, Job, Result


class ExportInterruptedError(ReviewscoreError):
    """The job went away (deleted, or purged by retention) while its results were streamed."""

    status_code = 410


@dataclass(frozen=True)
class ResultLine:
    id: str
    p_positive: float | None
    label: str | None
    model_version: str | None
    truncated: bool | None
    error: str | None
    # The job's kept input columns for this row, by name (None when the job keeps none).
    extra: dict[str, Any] | None = None


# The one place a score becomes a label: jobs' results, exports and POST /v1/score alike.
POSITIVE_FROM = 0.5


def label_of(p_positive: float | None) -> str | None:
    if p_positive is None:
        return None
    return "positive" if p_positive >= POSITIVE_FROM else "negative"


def _exists(session: Session, job_id: str) -> bool:
    found = select(Job.id).where(Job.id == job_id, Job.deleted_at.is_(None))
    return session.execute(found).first() is not None


def iter_results(
    job_id: str, page_size: int = 5000, with_extra: bool = False
) -> Iterator[ResultLine]:
    """Every input row with its result (keyset pagination, one short transaction per page),
    and its kept input columns if `with_extra`. Raises ExportInterruptedError if the job is
    deleted meanwhile, so a cut-short stream never looks like a complete one."""
    last = 0
    # Without kept columns a constant NULL stands in, so the JSON column is not read at all.
    extra_column: Any = InputRow.extra if with_extra else null()
    with session_scope(readonly=True) as session:
        # A job in parts numbers its rows by part (core/parts.py): ids are their ordinals.
        offsets = parts.ordinal_offsets(session, job_id)
        # Every result of the job is by the version it is pinned to (results keep none).
        job_version = session.execute(
            select(Job.model_version).where(Job.id == job_id)
        ).scalar_one_or_none()
    while True:
        with session_scope(readonly=True) as session:
            page = session.execute(
                select(
                    InputRow.row_num,
                    InputRow.ext_id,
                    InputRow.error,
                    Result.p_positive,
                    Result.truncated,
                    # Not null for every result (a primary key column): "has a result".
                    Result.row_num.label("result_row"),
                    Result.error,
                    extra_column,
                )
                .outerjoin(
                    Result,
                    (Result.job_id == InputRow.job_id) & (Result.row_num == InputRow.row_num),
                )
                .where(InputRow.job_id == job_id, InputRow.row_num > last)
                .order_by(InputRow.row_num)
                .limit(page_size)
            ).all()
            if len(page) < page_size and not _exists(session, job_id):
                raise ExportInterruptedError(
                    f"job {job_id} was deleted while its results were being sent; "
                    "the download is incomplete"
                )
        for row_num, ext_id, in_error, p, truncated, result_row, error, extra in page:
            has_result = result_row is not None
            yield ResultLine(
                id=ext_id if ext_id is not None else parts.default_id(row_num, offsets),
                p_positive=p,
                label=label_of(p),
                model_version=job_version if has_result else None,
                truncated=truncated if has_result else None,
                error=error if has_result else (in_error or "not scored yet"),
                extra=extra,
            )
        if len(page) < page_size:
            return
        last = page[-1][0]


# --- the summary -----------------------------------------------------------------------------

HISTOGRAM_BINS = 10
# Failure reasons are grouped with their numbers taken out ("text is 1,500 bytes, over the
# limit of 1,000" and "... 2,000 bytes ..." are one reason); the most frequent are listed.
MAX_REASONS = 20
_NUMBER = re.compile(r"\d[\d,.]*")


@dataclass(frozen=True)
class Summary:
    """What a job's results add up to. For an unfinished job it covers the rows done so far."""

    rows: int
    scored: int
    failed: int
    not_scored_yet: int
    labels: dict[str, int]
    share_positive: float | None
    histogram_edges: list[float]
    histogram_counts: list[int]
    failed_by_reason: dict[str, int] = field(default_factory=dict)
    # For a job whose file has a label column: its scores against the rows' own labels.
    evaluation: Evaluation | None = None


def _bin_of(p: Any) -> Any:
    # Portable binning (SQLite has no floor() everywhere; PostgreSQL rounds a cast to integer).
    edges = [(p < (i + 1) / HISTOGRAM_BINS, i) for i in range(HISTOGRAM_BINS - 1)]
    return case(*edges, else_=HISTOGRAM_BINS - 1)


def reason_of(error: str) -> str:
    """A failure message with its numbers generalised, so rows that failed alike count alike."""
    return _NUMBER.sub("N", error)[:200]


def summarize(session: Session, job_id: str) -> Summary:
    """Two grouped reads of the job's results: scores by histogram bin, failures by message."""
    bins = _bin_of(Result.p_positive).label("bin")
    counts = [0] * HISTOGRAM_BINS
    for bin_index, n in session.execute(
        select(bins, func.count())
        .where(Result.job_id == job_id, Result.p_positive.is_not(None), Result.error.is_(None))
        .group_by(bins)
    ):
        counts[int(bin_index)] += n
    reasons: Counter[str] = Counter()
    for error, n in session.execute(
        select(Result.error, func.count())
        .where(Result.job_id == job_id, Result.error.is_not(None))
        .group_by(Result.error)
        .order_by(func.count().desc())
        .limit(1000)
    ):
        reasons[reason_of(error or "")] += n
    rows = session.execute(select(func.count()).where(InputRow.job_id == job_id)).scalar_one()
    scored, failed = sum(counts), sum(reasons.values())
    positive = sum(counts[HISTOGRAM_BINS // 2 :])
    top = dict(reasons.most_common(MAX_REASONS))
    if len(reasons) > MAX_REASONS:
        top["other reasons"] = failed - sum(top.values())
    label_column = session.execute(select(Job.label_column).where(Job.id == job_id)).scalar()
    return Summary(
        evaluation=evaluate(session, job_id) if label_column else None,
        rows=rows,
        scored=scored,
        failed=failed,
        not_scored_yet=max(rows - scored - failed, 0),
        labels={"positive": positive, "negative": scored - positive},
        share_positive=positive / scored if scored else None,
        histogram_edges=[i / HISTOGRAM_BINS for i in range(HISTOGRAM_BINS + 1)],
        histogram_counts=counts,
        failed_by_reason=top,
    )


def _length_bin_of(words: Any) -> Any:
    edges = list(enumerate(LENGTH_BINS))[1:]
    return case(*((words >= start, i) for i, start in reversed(edges)), else_=0)


def evaluate(session: Session, job_id: str) -> Evaluation:
    """The evaluation over the job's scored rows with a usable label: one grouped read counts
    them by score (to 6 decimals), predicted label, label and length bin; another counts the
    scored rows left out (no label, or one that could not be read)."""
    joined = (Result.job_id == InputRow.job_id) & (Result.row_num == InputRow.row_num)
    scored = (Result.job_id == job_id, Result.p_positive.is_not(None), Result.error.is_(None))
    score = cast(func.round(Result.p_positive * SCORE_SCALE), BigInteger).label("s")
    predicted = case((Result.p_positive >= 0.5, 1), else_=0).label("predicted")
    length = _length_bin_of(InputRow.words).label("length")
    left_out = {"no_label": 0, "unreadable_label": 0}
    for label, n in session.execute(
        select(InputRow.label, func.count())
        .select_from(Result)
        .join(InputRow, joined)
        .where(*scored, InputRow.label.is_(None) | (InputRow.label == UNREADABLE))
        .group_by(InputRow.label)
    ):
        left_out["unreadable_label" if label == UNREADABLE else "no_label"] += n
    # Streamed in score order and counted as they come (evaluation.py), never held: a Core
    # read, each grouped row passed as the tuple it is.
    cells = (
        session.connection()
        .execute(
            select(score, predicted, InputRow.label, length, func.count())
            .select_from(Result)
            .join(InputRow, joined)
            .where(*scored, InputRow.label.in_((POSITIVE, NEGATIVE)))
            .group_by(score, predicted, InputRow.label, length)
            .order_by(score)
            .execution_options(yield_per=10_000)
        )
        .tuples()
    )
    return evaluate_cells(cells, left_out)
