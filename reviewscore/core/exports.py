"""A job's results as downloadable files, streamed: CSV (by default with formula cells
neutralised for spreadsheets, or byte-faithful with guard=false), JSON Lines and Parquet
(written in row groups). Kept input columns follow the result columns."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from reviewscore.core.results import ResultLine, iter_results

RESULT_COLUMNS = ["id", "p_positive", "label", "model_version", "truncated", "error"]
# A cell starting with one of these is run as a formula by Excel, LibreOffice or Google Sheets
# (OWASP's list for CSV injection)...
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# ...unless the whole cell is a plain decimal number, which a spreadsheet reads as that number:
# -1, +44, -3.5e2 and .5 are left exactly as they are.
PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
# Rows per piece sent: big enough to keep per-write overhead low, small enough to stream.
PIECE_ROWS = 2000
# A Parquet row group is written once it holds this many rows or about this many bytes.
ROW_GROUP_ROWS = 50_000
ROW_GROUP_BYTES = 32 * 1024 * 1024


def neutralise(value: str) -> str:
    """The cell as a spreadsheet shows it as text: a leading quote before anything that would
    run as a formula (=1+1, @SUM(A1), +cmd|' /C calc'!A0, -2+3); numbers are never altered."""
    if value.startswith(FORMULA_START) and not PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def kept_names(keep_columns: list[str]) -> list[str]:
    """Export names of kept input columns: a name taken by a result column gets `input_` in
    front (keep_columns=label gives input_label beside the predicted label)."""
    taken = set(RESULT_COLUMNS)
    names = []
    for name in keep_columns:
        export = name
        while export in taken:
            export = "input_" + export
        taken.add(export)
        names.append(export)
    return names


def _text(value: Any) -> str:
    """A kept value in a text cell: strings as they are, other JSON values as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


@dataclass(frozen=True)
class ExportRequest:
    job_id: str
    keep_columns: list[str]
    guard: bool = True

    @property
    def header(self) -> list[str]:
        return RESULT_COLUMNS + kept_names(self.keep_columns)

    def lines(self) -> Iterator[ResultLine]:
        return iter_results(self.job_id, with_extra=bool(self.keep_columns))

    def kept(self, line: ResultLine) -> list[Any]:
        extra = line.extra or {}
        return [extra.get(name) for name in self.keep_columns]


def csv_lines(request: ExportRequest) -> Iterator[bytes]:
    out = io.StringIO()
    # CRLF records (RFC 4180): with a bare "\n" terminator the writer would leave a "\r" inside
    # a field unquoted, and readers would split the record there.
    writer = csv.writer(out, lineterminator="\r\n")
    cell: Callable[[str], str] = neutralise if request.guard else str
    writer.writerow([cell(name) for name in request.header])
    for n, line in enumerate(request.lines(), start=1):
        writer.writerow(
            [
                cell(line.id),
                "" if line.p_positive is None else f"{line.p_positive:.6f}",
                line.label or "",
                cell(line.model_version or ""),
                "" if line.truncated is None else str(line.truncated).lower(),
                cell(line.error or ""),
                *(cell(_text(v)) for v in request.kept(line)),
            ]
        )
        if n % PIECE_ROWS == 0:
            yield out.getvalue().encode()
            out.seek(0)
            out.truncate()
    yield out.getvalue().encode()


def jsonl_lines(request: ExportRequest) -> Iterator[bytes]:
    names = kept_names(request.keep_columns)
    batch: list[str] = []
    for line in request.lines():
        record = {
            "id": line.id,
            "p_positive": line.p_positive,
            "label": line.label,
            "model_version": line.model_version,
            "truncated": line.truncated,
            "error": line.error,
        }
        record.update(zip(names, request.kept(line), strict=True))
        batch.append(json.dumps(record, ensure_ascii=False))
        if len(batch) >= PIECE_ROWS:
            yield ("\n".join(batch) + "\n").encode()
            batch = []
    if batch:
        yield ("\n".join(batch) + "\n").encode()


class _Sink(io.RawIOBase):
    """Where the Parquet writer writes: what it wrote is taken out piece by piece and sent."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:  # type: ignore[override]
        chunk = bytes(data)
        self._parts.append(chunk)
        self._position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._position

    def take(self) -> bytes:
        data, self._parts = b"".join(self._parts), []
        return data


def parquet_pieces(request: ExportRequest) -> Iterator[bytes]:
    """Parquet, one row group at a time; kept columns are text (other JSON values as JSON)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fields = [
        pa.field("id", pa.string()),
        pa.field("p_positive", pa.float64()),
        pa.field("label", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("truncated", pa.bool_()),
        pa.field("error", pa.string()),
        *(pa.field(name, pa.string()) for name in kept_names(request.keep_columns)),
    ]
    schema = pa.schema(fields)
    names = [f.name for f in fields]
    sink = _Sink()
    columns: list[list[Any]] = [[] for _ in fields]
    size = 0
    writer = pq.ParquetWriter(sink, schema)
    for line in request.lines():
        kept = [None if v is None else _text(v) for v in request.kept(line)]
        values = [
            line.id,
            line.p_positive,
            line.label,
            line.model_version,
            line.truncated,
            line.error,
            *kept,
        ]
        for column, value in zip(columns, values, strict=True):
            column.append(value)
        size += len(line.id) + len(line.error or "") + sum(len(v or "") for v in kept) + 40
        if len(columns[0]) >= ROW_GROUP_ROWS or size >= ROW_GROUP_BYTES:
            writer.write_table(pa.Table.from_pydict(dict(zip(names, columns, strict=True)), schema))
            columns, size = [[] for _ in fields], 0
            yield sink.take()
    if columns[0]:
        writer.write_table(pa.Table.from_pydict(dict(zip(names, columns, strict=True)), schema))
    writer.close()
    yield sink.take()


@dataclass(frozen=True)
class Export:
    media_type: str
    pieces: Callable[[ExportRequest], Iterator[bytes]]


EXPORTS = {
    "csv": Export("text/csv; charset=utf-8", csv_lines),
    "jsonl": Export("application/x-ndjson", jsonl_lines),
    "parquet": Export("application/vnd.apache.parquet", parquet_pieces),
}
