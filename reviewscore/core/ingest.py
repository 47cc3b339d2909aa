"""Streaming CSV ingest: bytes in (plain or gzip, any size), validated rows out, never the whole file in memory."""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from reviewscore.core.errors import BadUploadError, UploadTooLargeError

TEXT_COLUMN_DEFAULTS = ("text", "review")
READ_SIZE = 256 * 1024
_BINARY_SIGNATURES = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"%PDF": "a PDF document",
    b"PK\x03\x04": "a ZIP archive (an .xlsx spreadsheet, say)",
    b"\x7fELF": "an executable",
}


@dataclass(frozen=True)
class IngestLimits:
    max_upload_bytes: int
    max_text_bytes: int
    max_rows: int
    max_gzip_ratio: int


@dataclass(frozen=True)
class ParsedRow:
    row_num: int
    ext_id: str | None
    text: str
    error: str | None


class GzipGuard(io.RawIOBase):
    """The stdlib's GzipFile (multi-member, detects a truncated stream) over the upload, refusing
    a stream that expands beyond the upload limit or far beyond any real CSV (a gzip bomb)."""

    def __init__(
        self, compressed: io.BufferedReader, received: LimitedReader, limits: IngestLimits
    ):
        self._gzip = gzip.GzipFile(fileobj=compressed, mode="rb")
        self._received = received
        self._limits = limits
        self._expanded = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        try:
            n = self._gzip.readinto(buffer)
        except EOFError as exc:
            # Without this a cut-off .gz would pass for a shorter file, its last row torn.
            raise BadUploadError(
                "the gzip file ends early (truncated?): its end marker never came"
            ) from exc
        except (OSError, zlib.error) as exc:
            raise BadUploadError(f"the gzip data is corrupt: {exc}") from exc
        self._expanded += n
        if self._expanded > self._limits.max_upload_bytes:
            raise UploadTooLargeError(
                f"the gzip file expands to more than {self._limits.max_upload_bytes:,} bytes, "
                "the upload limit"
            )
        if self._expanded > 10 * 1024 * 1024 and (
            self._expanded > self._limits.max_gzip_ratio * max(self._received.received, 1)
        ):
            raise UploadTooLargeError(
                f"the gzip file expands more than {self._limits.max_gzip_ratio}x "
                "(a gzip bomb?); refused"
            )
        return n


class LimitedReader(io.RawIOBase):
    """Counts the bytes received and stops at the upload limit."""

    def __init__(self, raw: BinaryIO, max_bytes: int) -> None:
        self._raw = raw
        self._max = max_bytes
        self.received = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._raw.read(len(buffer))
        if not data:
            return 0
        self.received += len(data)
        if self.received > self._max:
            raise UploadTooLargeError(
                f"the upload is larger than {self._max:,} bytes, the limit "
                "(REVIEWSCORE_MAX_UPLOAD_BYTES)"
            )
        n = len(data)
        buffer[:n] = data
        return n


SURROGATE_CODECS = {"utf-7", "unicode-escape", "raw-unicode-escape"}


def is_valid_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def resolve_text_column(header: list[str], requested: str | None) -> int:
    if requested:
        if requested in header:
            return header.index(requested)
        raise BadUploadError(
            f"text_column {requested!r} is not in the file; its columns are: {_columns(header)}"
        )
    lowered = [name.lower() for name in header]
    for candidate in TEXT_COLUMN_DEFAULTS:
        if candidate in lowered:
            return lowered.index(candidate)
    raise BadUploadError(
        "no text column: name it with text_column (default 'text', else 'review'); "
        f"the file's columns are: {_columns(header)}"
    )


def _columns(header: list[str]) -> str:
    shown = ", ".join(repr(name) for name in header[:50])
    return shown + (f" and {len(header) - 50} more" if len(header) > 50 else "")


class CsvReviews:
    """Parses an uploaded CSV stream into rows; the header is read (and checked) on construction."""

    def __init__(
        self,
        raw: BinaryIO,
        limits: IngestLimits,
        *,
        text_column: str | None = None,
        id_column: str | None = None,
        encoding: str | None = None,
    ) -> None:
        self.limits = limits
        self._limited = LimitedReader(raw, limits.max_upload_bytes)
        buffered: io.BufferedReader[Any] = io.BufferedReader(self._limited, READ_SIZE)
        # The first bytes tell gzip and binary files apart, and stay in the buffer for the parser.
        head = buffered.peek(8)[:8]
        if not head:
            raise BadUploadError("the file is empty")
        stream: io.BufferedReader[Any] = buffered
        if head[:2] == b"\x1f\x8b":
            stream = io.BufferedReader(GzipGuard(buffered, self._limited, limits), READ_SIZE)
        elif not encoding or not encoding.lower().startswith("utf-16"):
            self._refuse_binary(head)
        self.encoding = self._check_encoding(encoding)
        text_stream = io.TextIOWrapper(
            stream
            if isinstance(stream, io.BufferedReader)
            else io.BufferedReader(stream, READ_SIZE),  # type: ignore[arg-type]
            encoding=self.encoding,
            errors="strict",
            newline="",
        )
        # The csv module's own limit turns a runaway field (an unterminated quote, say) into an
        # error instead of a read of the whole upload into one string.
        csv.field_size_limit(max(limits.max_text_bytes * 4, 1024 * 1024))
        self._reader = csv.reader(text_stream, strict=True)
        self.rows_read = 0
        header = self._read_header()
        self.columns = header
        self._text_idx = resolve_text_column(header, text_column)
        self.text_column = header[self._text_idx]
        self._id_idx: int | None = None
        if id_column:
            if id_column not in header:
                raise BadUploadError(
                    f"id_column {id_column!r} is not in the file; its columns are: "
                    f"{_columns(header)}"
                )
            self._id_idx = header.index(id_column)
        self.id_column = id_column
        # The only codecs whose strict decoding can still yield lone surrogates, which neither
        # the model nor PostgreSQL accept: rows from them are checked one by one.
        self._check_surrogates = self.encoding in SURROGATE_CODECS

    @property
    def bytes_received(self) -> int:
        return self._limited.received

    @staticmethod
    def _refuse_binary(head: bytes) -> None:
        if head.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise BadUploadError("the file is UTF-16: save it as UTF-8 or pass encoding=utf-16")
        for signature, what in _BINARY_SIGNATURES.items():
            if head.startswith(signature):
                raise BadUploadError(f"this is not a CSV file: it looks like {what}")
        if b"\x00" in head:
            raise BadUploadError("this is not a CSV text file: it holds binary data (NUL bytes)")

    @staticmethod
    def _check_encoding(encoding: str | None) -> str:
        if not encoding:
            return "utf-8-sig"
        try:
            name = codecs.lookup(encoding).name
            # str.encode refuses codecs that are not text encodings (rot13, base64, zlib...),
            # which TextIOWrapper would otherwise reject with a LookupError mid-request.
            "".encode(name)
        except (LookupError, UnicodeError) as exc:
            raise BadUploadError(f"unknown or unusable text encoding {encoding!r}") from exc
        return "utf-8-sig" if name == "utf-8" else name

    def _read_header(self) -> list[str]:
        try:
            for record in self._reader:
                if record and any(cell.strip() for cell in record):
                    return [cell.strip() for cell in record]
        except UnicodeError as exc:
            raise self._decode_error(exc) from exc
        except csv.Error as exc:
            raise BadUploadError(f"the header row is not valid CSV: {exc}") from exc
        raise BadUploadError("the file is empty")

    def _decode_error(self, exc: UnicodeError) -> BadUploadError:
        if not isinstance(exc, UnicodeDecodeError):
            # Raised by some codecs instead (UTF-16 without a BOM, punycode...).
            return BadUploadError(
                f"the file cannot be read as {self.encoding}: {exc}; "
                "save it as UTF-8 or pass the encoding it was saved in"
            )
        return BadUploadError(
            f"the file is not valid {self.encoding.replace('-sig', '').upper()} "
            f"(byte 0x{exc.object[exc.start]:02x} near data row {self.rows_read + 1}); "
            "save it as UTF-8 or pass encoding (e.g. encoding=latin-1)"
        )

    def __iter__(self) -> Iterator[ParsedRow]:
        reader = self._reader
        width = len(self.columns)
        text_idx, id_idx = self._text_idx, self._id_idx
        max_text, max_rows = self.limits.max_text_bytes, self.limits.max_rows
        while True:
            try:
                record = next(reader)
            except StopIteration:
                return
            except UnicodeError as exc:
                raise self._decode_error(exc) from exc
            except csv.Error as exc:
                raise BadUploadError(
                    f"malformed CSV at data row {self.rows_read + 1} "
                    f"(line {reader.line_num}): {exc}"
                ) from exc
            if not record:
                continue  # a blank line between records
            self.rows_read += 1
            if self.rows_read > max_rows:
                raise UploadTooLargeError(
                    f"the file has more than {max_rows:,} rows, the per-job limit "
                    "(REVIEWSCORE_MAX_ROWS_PER_JOB)"
                )
            yield self._row(record, width, text_idx, id_idx, max_text)

    def _row(
        self, record: list[str], width: int, text_idx: int, id_idx: int | None, max_text: int
    ) -> ParsedRow:
        row_num = self.rows_read
        ext_id = None
        if id_idx is not None and id_idx < len(record):
            ext_id = record[id_idx].replace("\x00", "")
        if text_idx >= len(record):
            return ParsedRow(
                row_num, ext_id, "", f"row has {len(record)} fields, the header has {width}"
            )
        # PostgreSQL text cannot hold NUL characters, and they carry no meaning in a review.
        text = record[text_idx].replace("\x00", "")
        if self._check_surrogates and not is_valid_unicode(text + (ext_id or "")):
            return ParsedRow(
                row_num, None, "", "text or id holds a lone surrogate (invalid Unicode)"
            )
        error = None
        if not text.strip():
            error = "empty text"
        elif len(text) * 4 > max_text and len(text.encode("utf-8")) > max_text:
            error = f"text is {len(text.encode('utf-8')):,} bytes, over the limit of {max_text:,}"
            text = ""
        elif id_idx is not None and not (ext_id or "").strip():
            error = f"empty id in column {self.id_column!r}"
        return ParsedRow(row_num, ext_id, text, error)
