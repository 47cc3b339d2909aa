"""A job's results: as a stream in input order (read page by page in short transactions), and
as a summary (counts per label, a histogram of p_positive, failed rows by reason)."""

from __future__ import annotations

import bisect
import heapq
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from sqlalchemy import BigInteger, case, cast, func, null, select
from sqlalchemy.orm import Session

from reviewscore.core import parts
from reviewscore.core.db import session_scope
from reviewscore.core.errors import ReviewscoreError
from reviewscore.core.evaluation import LENGTH_BINS, SCORE_SCALE, Evaluation, evaluate_cells
from reviewscore.core.ingest import records
from reviewscore.core.ingest.labels import NEGATIVE, POSITIVE, UNREADABLE
from reviewscore.core.schema import Chunk, ChunkText, InputRow, Job, Result


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


# A row as the export reads it: row_num, ext_id, its input error, p_positive, truncated, the
# result's row_num (not null when it has a result), the result's error, its kept columns.
_Line = tuple[int, str | None, str | None, float | None, bool | None, int | None, str | None, Any]


def iter_results(
    job_id: str, page_size: int = 5000, with_extra: bool = False
) -> Iterator[ResultLine]:
    """Every input row with its result (keyset pagination, one short transaction per page),
    and its kept input columns if `with_extra`. Raises ExportInterruptedError if the job is
    deleted meanwhile, so a cut-short stream never looks like a complete one.

    Rows of a chunk still held as its records (core/ingest/records.py: not scored, so no input
    row is stored) are read from its blob, merged in input order."""
    with session_scope(readonly=True) as session:
        # A job in parts numbers its rows by part (core/parts.py): ids are their ordinals.
        offsets = parts.ordinal_offsets(session, job_id)
        # Every result of the job is by the version it is pinned to (results keep none).
        job_version = session.execute(
            select(Job.model_version).where(Job.id == job_id)
        ).scalar_one_or_none()
        held = _held_as_records(session, job_id)
    stored = _stored_lines(job_id, page_size, with_extra, held)
    lines = heapq.merge(stored, _record_lines(job_id, held, with_extra), key=itemgetter(0))
    for row_num, ext_id, in_error, p, truncated, result_row, error, extra in lines:
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


def _held_as_records(session: Session, job_id: str) -> list[tuple[int, int, int]]:
    """(first_row, row_count, seq) of the job's chunks whose blob is their records: not scored
    (still to be, or never: closed by a cancel or a deadline), so no input row is stored yet
    (complete_chunk and give_up store them, and pack or drop the blob, in one transaction)."""
    return [
        (first_row, row_count, seq)
        for first_row, row_count, seq in session.execute(
            select(Chunk.first_row, Chunk.row_count, Chunk.seq)
            .join(ChunkText, (ChunkText.job_id == Chunk.job_id) & (ChunkText.seq == Chunk.seq))
            .where(
                Chunk.job_id == job_id,
                func.substr(ChunkText.data, 1, len(records.MAGIC)) == records.MAGIC,
            )
            .order_by(Chunk.first_row)
        )
    ]


def _stored_lines(
    job_id: str, page_size: int, with_extra: bool, held: list[tuple[int, int, int]]
) -> Iterator[_Line]:
    """The rows stored as input rows, leaving out those of `held` chunks (which may turn done
    while the export runs: _record_lines reads them then)."""
    starts = [first for first, _, _ in held]
    ends = [first + count for first, count, _ in held]

    def is_held(row_num: int) -> bool:
        i = bisect.bisect_right(starts, row_num) - 1
        return i >= 0 and row_num < ends[i]

    last = 0
    while True:
        page = _page(job_id, last, page_size, with_extra)
        for line in page:
            if not held or not is_held(line[0]):
                yield line
        if len(page) < page_size:
            return
        last = page[-1][0]


def _page(
    job_id: str, after: int, limit: int, with_extra: bool, before: int | None = None
) -> list[_Line]:
    # Without kept columns a constant NULL stands in, so the JSON column is not read at all.
    extra_column: Any = InputRow.extra if with_extra else null()
    with session_scope(readonly=True) as session:
        query = (
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
            .where(InputRow.job_id == job_id, InputRow.row_num > after)
            .order_by(InputRow.row_num)
            .limit(limit)
        )
        if before is not None:
            query = query.where(InputRow.row_num < before)
        page: list[_Line] = list(session.execute(query).tuples())
        if len(page) < limit and not _exists(session, job_id):
            raise ExportInterruptedError(
                f"job {job_id} was deleted while its results were being sent; "
                "the download is incomplete"
            )
    return page


def _record_lines(
    job_id: str, held: list[tuple[int, int, int]], with_extra: bool
) -> Iterator[_Line]:
    for first_row, row_count, seq in held:
        with session_scope(readonly=True) as session:
            blob = session.execute(
                select(ChunkText.data).where(ChunkText.job_id == job_id, ChunkText.seq == seq)
            ).scalar_one_or_none()
        if blob is not None and records.is_records(blob):
            for row in records.parse(blob, first_row):
                extra = row.extra if with_extra else None
                yield row.row_num, row.ext_id, row.error, None, None, None, None, extra
        else:  # scored since the export began: its input rows are stored now
            yield from _page(job_id, first_row - 1, row_count, with_extra, first_row + row_count)


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
    # Received rows: a chunk held as its records has no input rows until it is scored.
    rows = session.execute(
        select(func.coalesce(func.sum(Chunk.row_count), 0)).where(Chunk.job_id == job_id)
    ).scalar_one()
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
