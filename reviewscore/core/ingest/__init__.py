"""Streaming ingest: an upload's bytes in (plain or gzip, any size), validated rows out, never
the whole file in memory. One module per format (delimited: CSV and TSV; jsonl; parquet) on
shared streams, detection, column choice and row checks."""

from __future__ import annotations

from typing import BinaryIO

from reviewscore.core.errors import BadUploadError
from reviewscore.core.ingest.columns import (
    ID_COLUMN_DEFAULTS,
    ROW_NUMBER_ID,
    TEXT_COLUMN_DEFAULTS,
    parse_keep_columns,
)
from reviewscore.core.ingest.delimited import DelimitedReviews
from reviewscore.core.ingest.detect import FORMATS, choose_format, refuse_non_data
from reviewscore.core.ingest.jsonl import JsonLinesReviews
from reviewscore.core.ingest.parquet import ParquetReviews
from reviewscore.core.ingest.rows import (
    MAX_FIELDS,
    IngestLimits,
    ParsedRow,
    RecordSpec,
    Reviews,
    UploadOptions,
    is_valid_unicode,
)
from reviewscore.core.ingest.streams import (
    GzipGuard,
    LimitedReader,
    Replay,
    buffered,
    read_head,
)

__all__ = [
    "FORMATS",
    "ID_COLUMN_DEFAULTS",
    "MAX_FIELDS",
    "ROW_NUMBER_ID",
    "TEXT_COLUMN_DEFAULTS",
    "IngestLimits",
    "ParsedRow",
    "RecordSpec",
    "Reviews",
    "UploadOptions",
    "is_valid_unicode",
    "open_reviews",
    "parse_keep_columns",
]

GZIP_MAGIC = b"\x1f\x8b"


def open_reviews(raw: BinaryIO, limits: IngestLimits, options: UploadOptions) -> Reviews:
    """The upload as rows: gzip undone, the format, encoding and columns decided and the header
    checked. Raises BadUploadError (or UploadTooLargeError) before any row if the file cannot
    be read; later errors come from iterating, after the rows before them."""
    limited = LimitedReader(raw, limits.max_upload_bytes)
    stream = buffered(limited)
    start, _ = read_head(stream, len(GZIP_MAGIC))
    stream = buffered(Replay(start, stream))
    if start == GZIP_MAGIC:
        stream = buffered(GzipGuard(stream, limited, limits))
    head, at_eof = read_head(stream)
    if not head.strip():
        raise BadUploadError("the file is empty")
    stream = buffered(Replay(head, stream))
    refuse_non_data(head)
    chosen = choose_format(head, options.format, options.filename, options.content_type)
    if chosen == "parquet":
        return ParquetReviews(stream, limits, options)
    if chosen == "jsonl":
        return JsonLinesReviews(stream, head, at_eof, limits, options)
    return DelimitedReviews(stream, head, at_eof, limits, options, tab_separated=chosen == "tsv")
