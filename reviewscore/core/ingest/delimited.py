"""CSV and TSV uploads: the separator detected on the first records (or given), quoted fields
and line breaks as the csv module reads them, one record at a time from capped lines."""

from __future__ import annotations

import csv
import functools
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from reviewscore.core.errors import BadUploadError
from reviewscore.core.ingest.columns import choose
from reviewscore.core.ingest.detect import delimiter_option, detect_delimiter
from reviewscore.core.ingest.labels import parse_label
from reviewscore.core.ingest.rows import (
    IngestLimits,
    ParsedRow,
    RecordSpec,
    Reviews,
    RowChecks,
    UploadOptions,
)
from reviewscore.core.ingest.text import TextLines, split_lines

# The only codecs whose strict decoding can still yield lone surrogates, which neither the
# model nor PostgreSQL accept: rows from them are checked one by one.
SURROGATE_CODECS = {"utf-7", "unicode-escape", "raw-unicode-escape"}


class DelimitedReviews(Reviews):
    """A CSV (or TSV) upload; the header is read and its columns chosen on construction."""

    def __init__(
        self,
        stream: io.BufferedReader,
        head: bytes,
        at_eof: bool,
        limits: IngestLimits,
        options: UploadOptions,
        tab_separated: bool = False,
    ) -> None:
        self._header_read = False
        self._text = TextLines(
            stream, head, at_eof, limits=limits, options=options, where=self._where
        )
        self.encoding = self._text.encoding
        if options.delimiter:
            self.delimiter = delimiter_option(options.delimiter)
        else:
            self.delimiter = "\t" if tab_separated else detect_delimiter(self._text.sample)
        self.format = "tsv" if self.delimiter == "\t" else "csv"
        # The record cap (limits.max_row_bytes) is enforced on the lines before the csv module
        # sees them; its own field limit only has to allow a field that long.
        csv.field_size_limit(max(csv.field_size_limit(), limits.max_row_bytes))
        self._feed = _LineFeed(self._text.lines(self.delimiter))
        self._reader = csv.reader(self._feed, delimiter=self.delimiter, strict=True)
        self._checks = RowChecks(limits, None, check_unicode=self._text.codec in SURROGATE_CODECS)
        self.columns = self._read_header()
        self._header_read = True
        choice = choose(self.columns, options)
        self._text_idx, self._id_idx, self._keep_idx = choice.text, choice.id, choice.keep
        self.text_column = self.columns[choice.text]
        self.id_column = None if choice.id is None else self.columns[choice.id]
        self.keep_columns = [self.columns[i] for i in choice.keep]
        self._label_idx = choice.label
        self.label_column = None if choice.label is None else self.columns[choice.label]
        self._positive_from = options.positive_from
        self._checks.id_column = self.id_column

    def _where(self) -> str:
        if not self._header_read:
            return "the header row"
        return f"data row {self._checks.rows + 1:,}"

    def _next_record(self) -> list[str] | None:
        try:
            record = next(self._reader)
        except StopIteration:
            return None
        except csv.Error as exc:
            raise BadUploadError(
                f"malformed CSV at {self._where()} (line {self._feed.line_num:,}): {exc}"
            ) from exc
        self._text.new_record()
        return record

    def _read_header(self) -> list[str]:
        while (record := self._next_record()) is not None:
            if any(cell.strip() for cell in record):
                return [cell.strip() for cell in record]
        raise BadUploadError("the file is empty")

    def layout(self) -> DelimitedLayout:
        return DelimitedLayout(
            delimiter=self.delimiter or ",",
            width=len(self.columns),
            text_idx=self._text_idx,
            id_idx=self._id_idx,
            keep=tuple(zip(self.keep_columns, self._keep_idx, strict=True)),
            label_idx=self._label_idx,
            positive_from=self._positive_from,
        )

    def __iter__(self) -> Iterator[ParsedRow]:
        layout, checks = self.layout(), self._checks
        while (record := self._next_record()) is not None:
            if record:  # else a blank line between records
                yield layout.row(checks, record)

    def records(self) -> Iterator[tuple[int, bytes]]:
        """Each data record's bytes as read (its lines, quoted line breaks and all), numbered:
        every check that ends an upload runs (the csv module's, the record caps, decoding), the
        checks of each row's fields are left to whoever parses the record (Layout.row).

        A record of up to FAST_LINES lines that is plainly well formed (each field unquoted
        and free of quotes, or quoted with its quotes doubled) is one record for the csv module
        too: a regular expression tells so at a fifth of the csv module's cost, and anything
        else (an error to report, a quote inside an unquoted field) goes to the csv module."""
        captured: list[bytes] = []
        self._text.captured = captured
        whole, open_quote = _record_patterns(self.delimiter or ",")
        feed = self._feed
        while True:
            taken = _well_formed(feed, whole, open_quote)
            if taken is not None:
                self._text.new_record()
                if taken[0] in BLANK:  # a blank line between records
                    captured.clear()
                    continue
            else:
                record = self._next_record()
                if record is None:
                    return
                if not record:
                    del captured[: len(captured) - len(feed.back)]
                    continue
            # Every line read from the file left one entry in `captured`; those handed back
            # to the feed and not read again belong to the next record.
            cut = len(captured) - len(feed.back)
            raw = b"".join(captured[:cut])
            del captured[:cut]
            yield self._checks.next_row_num(), raw

    def record_spec(self) -> RecordSpec | None:
        codec = self._text.record_codec
        return None if codec is None else RecordSpec.of(self, codec, self._checks, self.layout())


# A record's lines are checked by the fast path only up to this many (a longer one goes to the
# csv module: the pattern is matched again on each line added).
FAST_LINES = 16
# A lone "\r" is the last line of a file ending in one: the csv module reads it as blank too.
BLANK = ("\n", "\r\n", "\r")


class _LineFeed:
    """The lines the csv module reads, which the fast path of records() reads first and hands
    back when a record is not plainly well formed; `line_num` counts the lines read as the csv
    module's own count would."""

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines = lines
        self.back: list[str] = []  # handed back, the next one last
        self._read = 0

    def __iter__(self) -> _LineFeed:
        return self

    def __next__(self) -> str:
        if self.back:
            return self.back.pop()
        line = next(self._lines)
        self._read += 1
        return line

    def hand_back(self, lines: list[str]) -> None:
        self.back.extend(reversed(lines))

    @property
    def line_num(self) -> int:
        return self._read - len(self.back)


@functools.cache
def _record_patterns(delimiter: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """(a whole well-formed record, a well-formed start of one that ends inside a quoted field)
    for this delimiter; possessive, so a match never backtracks."""
    d = re.escape(delimiter)
    field = f'(?:"(?:[^"]++|"")*+"|[^"{d}\r\n]*+)'
    whole = re.compile(f"{field}(?:{d}{field})*+\r?\n?")
    open_quote = re.compile(f'(?:{field}{d})*+"(?:[^"]++|"")*+')
    return whole, open_quote


def _well_formed(
    feed: _LineFeed, whole: re.Pattern[str], open_quote: re.Pattern[str]
) -> list[str] | None:
    """The lines of the next record if it is plainly well formed (or a blank line); None, with
    the lines read handed back, otherwise and at the end of the file."""
    taken: list[str] = []
    text = ""
    for line in feed:
        taken.append(line)
        text += line
        if line in BLANK and len(taken) == 1:
            return taken
        if whole.fullmatch(text):
            return taken
        if len(taken) >= FAST_LINES or not open_quote.fullmatch(text):
            break
    feed.hand_back(taken)
    return None


@dataclass(frozen=True)
class DelimitedLayout:
    """Where a CSV record's fields go, resolved against the header: what a worker needs to turn
    the records an API process stored (unparsed) into rows exactly as the API would have."""

    delimiter: str
    width: int
    text_idx: int
    id_idx: int | None
    keep: tuple[tuple[str, int], ...]
    label_idx: int | None
    positive_from: float | None

    @classmethod
    def of(cls, spec: RecordSpec) -> DelimitedLayout:
        fields = dict(spec.layout)
        fields["keep"] = tuple((name, index) for name, index in fields["keep"])
        return cls(**fields)

    def row(self, checks: RowChecks, record: list[str]) -> ParsedRow:
        row_num = checks.next_row_num()
        fields = len(record)
        id_idx, text_idx, label_idx = self.id_idx, self.text_idx, self.label_idx
        ext_id = record[id_idx] if id_idx is not None and id_idx < fields else None
        extra = {name: record[i] if i < fields else None for name, i in self.keep} or None
        if text_idx >= fields:
            return checks.row(
                row_num, "", ext_id, extra, f"row has {fields} fields, the header has {self.width}"
            )
        label = None
        if label_idx is not None and label_idx < fields:
            label = parse_label(record[label_idx], self.positive_from)
        return checks.row(row_num, record[text_idx], ext_id, extra, label=label)


def parse_records(spec: RecordSpec, records: Iterable[str], checks: RowChecks) -> list[ParsedRow]:
    """The rows of records stored unparsed (DelimitedReviews.records), as the upload's reader
    would have yielded them."""
    layout = DelimitedLayout.of(spec)
    # Each record's lines exactly as the reader was given them: split after each line break.
    lines = (line for record in records for line in split_lines(record))
    csv.field_size_limit(max(csv.field_size_limit(), 4 * spec.max_text_bytes, 1024 * 1024))
    reader = csv.reader(lines, delimiter=layout.delimiter, strict=True)
    return [layout.row(checks, record) for record in reader if record]
