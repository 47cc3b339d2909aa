"""Builders for the fast test layer: jobs and chunks straight through the core's functions, and
a stub scorer standing in for the Keras model (no TensorFlow: a deterministic score per text)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import func, select

from reviewscore.core import chunks, jobs
from reviewscore.core.db import session_scope
from reviewscore.core.ingest import ParsedRow
from reviewscore.core.model_registry import ModelInfo
from reviewscore.core.schema import Job, Result


def rows(n: int, start: int = 1, errors: dict[int, str] | None = None) -> list[ParsedRow]:
    """n parsed rows numbered from `start`; `errors` maps row numbers to ingest errors."""
    errors = errors or {}
    return [
        ParsedRow(i, f"id-{i}", "" if i in errors else f"review number {i}", errors.get(i))
        for i in range(start, start + n)
    ]


def make_job(
    n_rows: int,
    chunk_size: int,
    *,
    close_upload: bool = True,
    errors: dict[int, str] | None = None,
    model_version: str = "stub-1",
) -> str:
    """A job whose rows are stored in chunks of `chunk_size` (as an upload stores them)."""
    with session_scope() as s:
        job_id = jobs.create_job(
            s,
            model_name="stub",
            model_version=model_version,
            filename="reviews.csv",
            text_column="text",
            id_column="id",
        )
    parsed = rows(n_rows, errors=errors)
    for seq, start in enumerate(range(0, n_rows, chunk_size)):
        with session_scope() as s:
            chunks.add_chunk(s, job_id, seq, parsed[start : start + chunk_size])
    if close_upload:
        close(job_id)
    return job_id


def make_records_job(n_rows: int, chunk_size: int) -> str:
    """A job stored as the API stores a CSV upload by default (ingest design (b)), through the
    upload's own ChunkWriter: each chunk's records unparsed in one blob, no input rows until a
    worker scores the chunk."""
    import io

    from reviewscore.core.ingest import UploadOptions, open_reviews
    from reviewscore.core.settings import get_settings
    from reviewscore.core.uploads import ChunkWriter, items_of, limits_from

    body = "id,text\n" + "".join(f"id-{i},review number {i}\n" for i in range(1, n_rows + 1))
    settings = get_settings()
    reviews = open_reviews(
        io.BytesIO(body.encode()), limits_from(settings), UploadOptions(id_column="id")
    )
    items, spec = items_of(reviews, settings.model_copy(update={"ingest_parse": "worker"}))
    assert spec is not None
    with session_scope() as s:
        job_id = jobs.create_job(
            s, model_name="stub", model_version="stub-1", filename="reviews.csv",
            text_column="text", id_column="id",
        )  # fmt: skip
    writer = ChunkWriter(job_id, chunk_size, lambda job, seq: None, spec=spec)
    for item in items:
        writer.add(item)
    writer.flush()
    close(job_id)
    return job_id


def close(job_id: str, error: str | None = None) -> None:
    with session_scope() as s:
        jobs.finish_upload(s, job_id, error)
    jobs.try_complete(job_id)


def claim(
    job_id: str, seq: int, *, lease_s: float = 60, max_attempts: int = 3
) -> chunks.ChunkWork | None:
    return chunks.claim_chunk(
        job_id, seq, lease_s=lease_s, max_attempts=max_attempts, worker="test:1"
    )


def results_for(work: chunks.ChunkWork, p: float = 0.9) -> list[chunks.RowResult]:
    return [chunks.RowResult(r.row_num, None if r.error else p, False, r.error) for r in work.rows]


def complete(work: chunks.ChunkWork, p: float = 0.9) -> bool:
    """Writes a chunk's results as a worker does: in one transaction, then the completion."""
    with session_scope() as s:
        written = chunks.complete_chunk(s, work, results_for(work, p))
    if written:
        jobs.try_complete(work.job_id)
    return written


def score(job_id: str, seq: int) -> bool:
    work = claim(job_id, seq)
    return work is not None and complete(work)


def job(job_id: str) -> Job:
    with session_scope(readonly=True) as s:
        return jobs.get_job(s, job_id)


@dataclass(frozen=True)
class Tally:
    """What a user can check: the job's counters against the result rows in the database."""

    scored: int
    failed: int
    result_rows: int
    failed_result_rows: int

    @property
    def consistent(self) -> bool:
        return (self.scored + self.failed, self.failed) == (
            self.result_rows,
            self.failed_result_rows,
        )


def tally(job_id: str) -> Tally:
    current = job(job_id)
    with session_scope(readonly=True) as s:
        in_job = Result.job_id == job_id
        n = s.execute(select(func.count()).where(in_job)).scalar_one()
        failed = s.execute(
            select(func.count()).where(in_job, Result.error.is_not(None))
        ).scalar_one()
    return Tally(current.scored_rows, current.failed_rows, n, failed)


@dataclass(frozen=True)
class StubScores:
    p_positive: np.ndarray
    truncated: np.ndarray


class StubScorer:
    """Stands for the Keras model in fast tests: P(positive) from the text's length, no
    TensorFlow; `fail_on` makes any text containing it raise, as a model failure would."""

    device = "CPU:0"

    def __init__(self, version: str = "stub-1", batch_size: int = 4, fail_on: str = "") -> None:
        self.info = ModelInfo(
            name="stub", version=version, architecture="stub", path="/dev/null", metadata={}
        )
        self.batch_size = batch_size
        self.fail_on = fail_on
        self.calls: list[int] = []

    def score(self, texts: Sequence[str]) -> StubScores:
        self.calls.append(len(texts))
        if self.fail_on and any(self.fail_on in t for t in texts):
            raise RuntimeError("stub model failure")
        p = np.array([(len(t) % 10) / 10 for t in texts], dtype=np.float32)
        return StubScores(p, np.zeros(len(texts), dtype=bool))
