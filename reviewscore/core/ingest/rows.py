"""What every reader yields and shares: the limits, the options a user can pass, a parsed row,
and the checks each row goes through whatever its file format."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from reviewscore.core.errors import UploadTooLargeError

# A record with more separators than this is refused while it is read (a row of commas would
# otherwise become millions of fields). Far above any real file's width.
MAX_FIELDS = 10_000
# At most this many input columns can be kept next to the scores (keep_columns).
MAX_KEPT_COLUMNS = 50


@dataclass(frozen=True)
class IngestLimits:
    max_upload_bytes: int
    max_text_bytes: int
    max_rows: int
    max_gzip_ratio: int
    # Where a Parquet upload is spooled (it needs random access); None: the system's temp dir.
    spool_dir: Path | None = None

    @property
    def max_row_bytes(self) -> int:
        """The longest record read: a text over max_text_bytes is a per-row error up to here,
        and a record past this ends the upload as it is read, before it is held in memory."""
        return max(4 * self.max_text_bytes, 1024 * 1024)


@dataclass(frozen=True)
class UploadOptions:
    """What the user said about the file; every field may be left out."""

    filename: str | None = None
    content_type: str | None = None
    # csv, tsv, jsonl or parquet; None: decided from the content, the name and the type.
    format: str | None = None
    text_column: str | None = None
    id_column: str | None = None
    encoding: str | None = None
    delimiter: str | None = None
    keep_columns: tuple[str, ...] = ()
    # The column holding each row's own label (ingest/labels.py); None: found by name if the
    # file has one. positive_from: a numeric label is a rating, positive from this value up.
    label_column: str | None = None
    positive_from: float | None = None


@dataclass(frozen=True)
class ParsedRow:
    row_num: int
    ext_id: str | None
    text: str
    error: str | None
    # The kept input columns (keep_columns), by name; None when none are kept.
    extra: dict[str, Any] | None = None
    # The row's own label as read (labels.POSITIVE, NEGATIVE, UNREADABLE; None: none).
    label: int | None = None


def is_valid_unicode(text: str) -> bool:
    """False for strings holding lone surrogates, which neither the model nor PostgreSQL take."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _clean(value: Any) -> Any:
    # PostgreSQL text cannot hold NUL characters, and they carry no meaning in a review.
    return value.replace("\x00", "") if isinstance(value, str) and "\x00" in value else value


def _json_safe(value: Any) -> Any:
    """A kept value as the JSON column can store it on every backend: no NULs in strings, and
    NaN or infinity (which JSON has no words for) as text."""
    if isinstance(value, str):
        return _clean(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


@dataclass
class RowChecks:
    """Numbers rows and applies the per-row rules every format shares: NULs dropped, empty or
    over-long texts and empty ids become row errors, the row limit ends the upload."""

    limits: IngestLimits
    id_column: str | None
    check_unicode: bool = True
    rows: int = 0
    _kept_limit: int = field(init=False)

    def __post_init__(self) -> None:
        self._kept_limit = self.limits.max_text_bytes

    def next_row_num(self) -> int:
        self.rows += 1
        if self.rows > self.limits.max_rows:
            raise UploadTooLargeError(
                f"the file has more than {self.limits.max_rows:,} rows, the per-job limit "
                "(REVIEWSCORE_MAX_ROWS_PER_JOB)"
            )
        return self.rows

    def row(
        self,
        row_num: int,
        text: str,
        ext_id: str | None,
        extra: dict[str, Any] | None = None,
        error: str | None = None,
        label: int | None = None,
    ) -> ParsedRow:
        checked = self._checked(row_num, text, ext_id, extra, error)
        return checked if label is None else replace(checked, label=label)

    def _checked(
        self,
        row_num: int,
        text: str,
        ext_id: str | None,
        extra: dict[str, Any] | None,
        error: str | None,
    ) -> ParsedRow:
        ext_id = _clean(ext_id)
        surrogate = "text or id holds a lone surrogate (invalid Unicode)"
        if self.check_unicode and ext_id is not None and not is_valid_unicode(ext_id):
            return ParsedRow(row_num, None, "", surrogate)
        kept_error = None
        if extra is not None:
            extra = {name: _json_safe(value) for name, value in extra.items()}
            kept_error = self._check_kept(extra)
            if kept_error:
                extra = None
        if error is not None:
            return ParsedRow(row_num, ext_id, "", error, extra)
        text = _clean(text)
        if self.check_unicode and not is_valid_unicode(text):
            return ParsedRow(row_num, None, "", surrogate)
        max_text = self.limits.max_text_bytes
        if not text.strip():
            return ParsedRow(row_num, ext_id, "", "empty text", extra)
        if len(text) * 4 > max_text and len(text.encode("utf-8")) > max_text:
            size = len(text.encode("utf-8"))
            return ParsedRow(
                row_num,
                ext_id,
                "",
                f"text is {size:,} bytes, over the limit of {max_text:,}",
                extra,
            )
        if self.id_column is not None and not (ext_id or "").strip():
            return ParsedRow(row_num, ext_id, text, f"empty id in column {self.id_column!r}", extra)
        return ParsedRow(row_num, ext_id, text, kept_error, extra)

    def _check_kept(self, extra: dict[str, Any]) -> str | None:
        size = sum(len(v) for v in extra.values() if isinstance(v, str))
        if size > self._kept_limit:
            return (
                f"the kept columns hold {size:,} characters, over the limit of {self._kept_limit:,}"
            )
        if self.check_unicode and not all(
            is_valid_unicode(v) for v in extra.values() if isinstance(v, str)
        ):
            return "a kept column holds a lone surrogate (invalid Unicode)"
        return None


@dataclass(frozen=True)
class RecordSpec:
    """How the records of an upload stored unparsed (core/ingest/records.py) are read back
    into rows: their format, how their bytes decode, the row checks' settings, and where each
    field goes (the format's layout, resolved against the upload's header or first object)."""

    format: str
    codec: str
    errors: str
    check_unicode: bool
    max_text_bytes: int
    id_column: str | None
    layout: dict[str, Any]

    @classmethod
    def of(
        cls, reviews: Reviews, codec: tuple[str, str], checks: RowChecks, layout: Any
    ) -> RecordSpec:
        """The spec of an upload being read: `codec` (name, errors) as its records' bytes
        decode, `layout` the format's resolved field positions (a dataclass)."""
        return cls(
            format=reviews.format,
            codec=codec[0],
            errors=codec[1],
            check_unicode=checks.check_unicode,
            max_text_bytes=checks.limits.max_text_bytes,
            id_column=reviews.id_column,
            layout=dataclasses.asdict(layout),
        )


class Reviews:
    """A readable upload: its header is read and checked on construction; iterating yields its
    rows. Each format is a subclass (delimited, jsonl, parquet)."""

    format: str
    encoding: str | None = None
    delimiter: str | None = None
    columns: list[str]
    text_column: str
    id_column: str | None
    keep_columns: list[str]
    label_column: str | None = None

    def __iter__(self) -> Iterator[ParsedRow]:  # pragma: no cover - every subclass has one
        raise NotImplementedError

    def records(self) -> Iterator[tuple[int, bytes]]:
        """The data records' bytes as read, each with its row number, for a reader whose
        record_spec() is not None."""
        raise NotImplementedError

    def record_spec(self) -> RecordSpec | None:
        """How records() read back into rows; None: this upload is parsed row by row only."""
        return None

    def close(self) -> None:
        """Frees what the reader holds (a spooled file); safe to call twice."""
