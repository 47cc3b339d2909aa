"""A job's results as downloadable files: CSV (formula cells neutralised) or JSON Lines."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from reviewscore.core.results import ResultLine, iter_results

RESULT_COLUMNS = ["id", "p_positive", "label", "model_version", "truncated", "error"]
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
# Rows per piece sent: big enough to keep per-write overhead low, small enough to stream.
PIECE_ROWS = 2000


def _safe_cell(value: str) -> str:
    # Spreadsheets run cells that start like a formula; a leading quote keeps them text.
    return "'" + value if value.startswith(FORMULA_PREFIXES) else value


def csv_lines(job_id: str) -> Iterator[bytes]:
    out = io.StringIO()
    # CRLF records (RFC 4180): with a bare "\n" terminator the writer would leave a "\r" inside
    # a field unquoted, and readers would split the record there.
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(RESULT_COLUMNS)
    for n, line in enumerate(iter_results(job_id), start=1):
        writer.writerow(
            [
                _safe_cell(line.id),
                "" if line.p_positive is None else f"{line.p_positive:.6f}",
                line.label or "",
                line.model_version or "",
                "" if line.truncated is None else str(line.truncated).lower(),
                _safe_cell(line.error or ""),
            ]
        )
        if n % PIECE_ROWS == 0:
            yield out.getvalue().encode()
            out.seek(0)
            out.truncate()
    yield out.getvalue().encode()


def _json_line(line: ResultLine) -> str:
    return json.dumps(
        {
            "id": line.id,
            "p_positive": line.p_positive,
            "label": line.label,
            "model_version": line.model_version,
            "truncated": line.truncated,
            "error": line.error,
        },
        ensure_ascii=False,
    )


def jsonl_lines(job_id: str) -> Iterator[bytes]:
    batch: list[str] = []
    for line in iter_results(job_id):
        batch.append(_json_line(line))
        if len(batch) >= PIECE_ROWS:
            yield ("\n".join(batch) + "\n").encode()
            batch = []
    if batch:
        yield ("\n".join(batch) + "\n").encode()


@dataclass(frozen=True)
class Export:
    media_type: str
    lines: Callable[[str], Iterator[bytes]]


EXPORTS = {
    "csv": Export("text/csv; charset=utf-8", csv_lines),
    "jsonl": Export("application/x-ndjson", jsonl_lines),
}
