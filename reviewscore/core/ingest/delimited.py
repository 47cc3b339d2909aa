"""CSV and TSV uploads: the separator detected on the first records (or given), quoted fields
and line breaks as the csv module reads them, one record at a time from capped lines."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from reviewscore.core.errors import BadUploadError
from reviewscore.core.ingest.columns import choose
from reviewscore.core.ingest.detect import delimiter_option, detect_delimiter
from reviewscore.core.ingest.labels import parse_label
from reviewscore.core.ingest.rows import IngestLimits, ParsedRow, Reviews, RowChecks, UploadOptions
from reviewscore.core.ingest.text import TextLines

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
        self._reader = csv.reader(
            self._text.lines(self.delimiter), delimiter=self.delimiter, strict=True
        )
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
                f"malformed CSV at {self._where()} (line {self._reader.line_num:,}): {exc}"
            ) from exc
        self._text.new_record()
        return record

    def _read_header(self) -> list[str]:
        while (record := self._next_record()) is not None:
            if any(cell.strip() for cell in record):
                return [cell.strip() for cell in record]
        raise BadUploadError("the file is empty")

    def __iter__(self) -> Iterator[ParsedRow]:
        width = len(self.columns)
        checks, text_idx, id_idx = self._checks, self._text_idx, self._id_idx
        keep = list(zip(self.keep_columns, self._keep_idx, strict=True))
        label_idx, positive_from = self._label_idx, self._positive_from
        while (record := self._next_record()) is not None:
            if not record:
                continue  # a blank line between records
            row_num = checks.next_row_num()
            fields = len(record)
            ext_id = record[id_idx] if id_idx is not None and id_idx < fields else None
            extra = {name: record[i] if i < fields else None for name, i in keep} or None
            if text_idx >= fields:
                yield checks.row(
                    row_num, "", ext_id, extra, f"row has {fields} fields, the header has {width}"
                )
                continue
            label = None
            if label_idx is not None and label_idx < fields:
                label = parse_label(record[label_idx], positive_from)
            yield checks.row(row_num, record[text_idx], ext_id, extra, label=label)
