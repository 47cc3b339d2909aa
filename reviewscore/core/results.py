"""A job's results as a stream, in input order, read page by page in short transactions."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from reviewscore.core.db import session_scope
from reviewscore.core.errors import ReviewscoreError
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


def label_of(p_positive: float | None) -> str | None:
    return None if p_positive is None else ("positive" if p_positive >= 0.5 else "negative")


def _exists(session: Session, job_id: str) -> bool:
    return session.execute(select(Job.id).where(Job.id == job_id)).first() is not None


def iter_results(job_id: str, page_size: int = 5000) -> Iterator[ResultLine]:
    """Every input row with its result (keyset pagination, one short transaction per page).
    Raises ExportInterruptedError if the job is deleted meanwhile, so a cut-short stream never
    looks like a complete one."""
    last = 0
    while True:
        with session_scope(readonly=True) as session:
            page = session.execute(
                select(
                    InputRow.row_num,
                    InputRow.ext_id,
                    InputRow.error,
                    Result.p_positive,
                    Result.truncated,
                    Result.model_version,
                    Result.error,
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
        for row_num, ext_id, in_error, p, truncated, version, error in page:
            has_result = version is not None
            yield ResultLine(
                id=ext_id if ext_id is not None else str(row_num),
                p_positive=p,
                label=label_of(p),
                model_version=version,
                truncated=truncated if has_result else None,
                error=error if has_result else (in_error or "not scored yet"),
            )
        if len(page) < page_size:
            return
        last = page[-1][0]
