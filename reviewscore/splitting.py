"""A file cut into self-contained parts at record boundaries, for an upload in parts (the client
side of PUT /v1/jobs/{id}/parts/{n}): a CSV or TSV part begins with the header row and holds
whole records (a quoted line break never splits one), a JSON Lines part whole lines, a Parquet
part whole row groups written as a Parquet file of its own. A gzipped file is read as a stream
and its parts are gzipped too.

The same file always gives byte-identical parts (gzip's time stamp is 0), so a resumed upload
finds the parts already stored by their sha256. Parts are made lazily: at most one is held."""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

PART_BYTES = 8 * 1024 * 1024
# The server takes at most 199,999 rows a part; short reviews would reach that within 8 MiB.
MAX_PART_RECORDS = 100_000
GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"
FORMAT_SUFFIXES = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
}


class NotSplittableError(ValueError):
    """The file cannot be cut into parts here (send it as one upload instead)."""


def file_format(path: Path, given: str | None = None) -> tuple[str, bool]:
    """The file's format (csv, tsv, jsonl or parquet) and whether it is gzipped: the content
    first (gzip's and Parquet's magic bytes, a JSON object), then the name."""
    with path.open("rb") as f:
        head = f.read(4)
    gzipped = head[:2] == GZIP_MAGIC
    if given:
        return given.lower(), gzipped
    if head == PARQUET_MAGIC:
        return "parquet", False
    name = path.name.lower().removesuffix(".gz")
    by_name = FORMAT_SUFFIXES.get(Path(name).suffix)
    if by_name:
        return by_name, gzipped
    with _open(path, gzipped) as f:
        start = f.read(4096).lstrip()
    if start.startswith(b"{"):
        return "jsonl", gzipped
    return "csv", gzipped


def can_split(path: Path, format: str | None = None) -> bool:
    """Whether the file can be cut here (not: UTF-16 text, Parquet without pyarrow)."""
    fmt, gzipped = file_format(path, format)
    if fmt == "parquet":
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            return False
        return True
    with _open(path, gzipped) as f:
        return f.read(2) not in (b"\xff\xfe", b"\xfe\xff")


def _open(path: Path, gzipped: bool) -> BinaryIO:
    return gzip.open(path, "rb") if gzipped else path.open("rb")  # type: ignore[return-value]


def split(
    path: Path,
    format: str | None = None,
    *,
    part_bytes: int = PART_BYTES,
    max_records: int = MAX_PART_RECORDS,
) -> Iterator[bytes]:
    """The file's parts in order, each as the bytes to send."""
    fmt, gzipped = file_format(path, format)
    if fmt == "parquet":
        yield from _parquet_parts(path, gzipped, part_bytes, max_records)
        return
    with _open(path, gzipped) as f:
        start = f.read(2)
        if start in (b"\xff\xfe", b"\xfe\xff"):
            raise NotSplittableError(
                f"{path.name} is UTF-16: it cannot be cut into parts by its bytes; it is sent "
                "as one upload"
            )
        stream = io.BufferedReader(_Prefixed(start, f), 1 << 20)  # type: ignore[arg-type]
        pieces = (
            _line_parts(stream, part_bytes, max_records)
            if fmt == "jsonl"
            else _delimited_parts(stream, part_bytes, max_records)
        )
        for piece in pieces:
            yield gzip.compress(piece, compresslevel=6, mtime=0) if gzipped else piece


class _Prefixed(io.RawIOBase):
    """`head` (already read to look at the file) and then the rest of the stream."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _records(stream: BinaryIO) -> Iterator[bytes]:
    """CSV records as bytes, each ending where a line ends outside quotes: a quote character
    toggles "inside quotes" (a doubled quote toggles twice), as RFC 4180 reads them."""
    record: list[bytes] = []
    inside = False
    for line in stream:
        record.append(line)
        if line.count(b'"') % 2:
            inside = not inside
        if not inside:
            yield b"".join(record)
            record = []
    if record:
        yield b"".join(record)


def _delimited_parts(stream: BinaryIO, part_bytes: int, max_records: int) -> Iterator[bytes]:
    records = _records(stream)
    header = next(records, b"")
    if not header.endswith(b"\n"):
        header += b"\n"
    yield from _gather(records, header, part_bytes, max_records)


def _line_parts(stream: BinaryIO, part_bytes: int, max_records: int) -> Iterator[bytes]:
    lines = (line for line in stream if line.strip())
    yield from _gather(lines, b"", part_bytes, max_records)


def _gather(
    records: Iterator[bytes], header: bytes, part_bytes: int, max_records: int
) -> Iterator[bytes]:
    part: list[bytes] = []
    size = 0
    for record in records:
        if not record.endswith(b"\n"):
            record += b"\n"
        part.append(record)
        size += len(record)
        if size >= part_bytes or len(part) >= max_records:
            yield header + b"".join(part)
            part, size = [], 0
    if part:
        yield header + b"".join(part)


def _parquet_parts(path: Path, gzipped: bool, part_bytes: int, max_records: int) -> Iterator[bytes]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise NotSplittableError(
            "splitting a Parquet file needs pyarrow (pip install pyarrow); it is sent as one upload"
        ) from None
    with _open(path, gzipped) as f:
        source = pa.BufferReader(f.read()) if gzipped else pa.OSFile(str(path))
    parquet = pq.ParquetFile(source)
    meta = parquet.metadata
    groups: list[int] = []
    size = rows = 0

    def written(indices: list[int]) -> bytes:
        sink = io.BytesIO()
        pq.write_table(parquet.read_row_groups(indices), sink)
        return sink.getvalue()

    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        if groups and (
            size + group.total_byte_size > part_bytes or rows + group.num_rows > max_records
        ):
            yield written(groups)
            groups, size, rows = [], 0, 0
        groups.append(i)
        size += group.total_byte_size
        rows += group.num_rows
    if groups:
        yield written(groups)
