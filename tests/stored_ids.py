"""A job's stored rows as its export lists them, read straight from the database: the input rows
of its parsed chunks, and the rows of chunks whose records are still stored unparsed (ingest
design (b): a chunk's input rows exist only once a worker has scored it, so a job cancelled
with chunks queued keeps those rows in their blobs). A row stored twice shows twice."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reviewscore.core.ingest import records


def held_rows(job: str) -> str:
    """SQL for the number of rows of the job `job` (an SQL expression) in chunks still held as
    records; the query binds `:magic` to records.MAGIC."""
    return (
        "(SELECT coalesce(sum(c.row_count), 0) FROM chunks c JOIN chunk_texts t "
        f"ON t.job_id = c.job_id AND t.seq = c.seq WHERE c.job_id = {job} "
        "AND substr(t.data, 1, 4) = :magic)"
    )


def stored_ids(sql: Callable[..., list[Any]], job_id: str) -> list[str | None]:
    """The ids of `job_id`'s stored rows in input order; `sql(query, **params)` runs a query.
    One statement, so one snapshot: a chunk a worker completes meanwhile (its blob dropped, its
    input rows written) is seen on one side only."""
    found: list[tuple[int, str | None]] = []
    for row_num, ext_id, data in sql(
        "SELECT row_num, ext_id, CAST(NULL AS BYTEA) FROM input_rows WHERE job_id = :j "
        "UNION ALL SELECT c.first_row, CAST(NULL AS TEXT), t.data FROM chunk_texts t "
        "JOIN chunks c ON c.job_id = t.job_id AND c.seq = t.seq WHERE t.job_id = :j",
        j=job_id,
    ):
        if data is None:
            found.append((int(row_num), ext_id))
        elif records.is_records(bytes(data)):
            found += [(row.row_num, row.ext_id) for row in records.parse(bytes(data), row_num)]
    return [ext_id for _, ext_id in sorted(found, key=lambda pair: pair[0])]
