"""Parquet uploads. A Parquet file is read from its end (the footer holds the schema), so the
upload is first spooled to a temporary file (bounded by the upload limit); then only the
needed columns are read, batch by batch, with buffered page reads so a large row group is
never held whole."""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from reviewscore.core.errors import BadUploadError
from reviewscore.core.ingest.columns import choose
from reviewscore.core.ingest.labels import parse_label
from reviewscore.core.ingest.rows import IngestLimits, ParsedRow, Reviews, RowChecks, UploadOptions
from reviewscore.core.ingest.streams import READ_SIZE

# Rows decoded at a time: a batch's texts are the reader's only per-row memory.
BATCH_ROWS = 256
PAGE_BUFFER = 1024 * 1024
SPOOL_PREFIX = "upload-"
# Spooled files older than this are left-overs of a process that died mid-upload.
SPOOL_MAX_AGE_S = 24 * 3600


def _spool(stream: io.BufferedReader, directory: Path | None) -> Path:
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        _remove_stale(directory)
    handle, name = tempfile.mkstemp(prefix=SPOOL_PREFIX, suffix=".parquet", dir=directory)
    try:
        with os.fdopen(handle, "wb") as out:
            while data := stream.read(READ_SIZE):
                out.write(data)
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)


def _remove_stale(directory: Path) -> None:
    cutoff = time.time() - SPOOL_MAX_AGE_S
    for path in directory.glob(f"{SPOOL_PREFIX}*"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
        except OSError:
            pass


def _as_id(value: Any) -> str | None:
    """An id value as text: strings as they are, integers in full, floats as Python prints
    them (the shortest form that reads back the same)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return repr(value) if isinstance(value, float) else str(value)


def _as_json(value: Any) -> Any:
    """A kept value as something JSON holds (dates as ISO text, bytes as text)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return json.loads(json.dumps(value, default=_as_id))


class ParquetReviews(Reviews):
    format = "parquet"

    def __init__(
        self, stream: io.BufferedReader, limits: IngestLimits, options: UploadOptions
    ) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._path: Path | None = _spool(stream, limits.spool_dir)
        try:
            try:
                self._file = pq.ParquetFile(self._path, buffer_size=PAGE_BUFFER, pre_buffer=False)
            except (pa.ArrowException, OSError) as exc:
                raise BadUploadError(
                    f"the Parquet file cannot be read ({str(exc)[:200]}): is it complete?"
                ) from exc
            schema = self._file.schema_arrow
            self.columns = list(schema.names)
            choice = choose(self.columns, options)
            text_type = schema.field(choice.text).type
            if not (
                pa.types.is_string(text_type)
                or pa.types.is_large_string(text_type)
                or (pa.types.is_dictionary(text_type) and pa.types.is_string(text_type.value_type))
                or str(text_type) == "string_view"
            ):
                raise BadUploadError(
                    f"column {self.columns[choice.text]!r} holds {text_type}, not text: name "
                    "the text column with text_column"
                )
        except BaseException:
            self.close()
            raise
        self.text_column = self.columns[choice.text]
        self.id_column = None if choice.id is None else self.columns[choice.id]
        self.keep_columns = [self.columns[i] for i in choice.keep]
        self.label_column = None if choice.label is None else self.columns[choice.label]
        self._positive_from = options.positive_from
        self._names = list(
            dict.fromkeys(
                [
                    self.text_column,
                    *([self.id_column] if self.id_column else []),
                    *([self.label_column] if self.label_column else []),
                    *self.keep_columns,
                ]
            )
        )
        self._checks = RowChecks(limits, self.id_column)

    def close(self) -> None:
        if self._path is not None:
            self._path.unlink(missing_ok=True)
            self._path = None

    def __iter__(self) -> Iterator[ParsedRow]:
        import pyarrow as pa

        try:
            batches = self._file.iter_batches(
                batch_size=BATCH_ROWS, columns=self._names, use_threads=False
            )
            for batch in batches:
                yield from self._rows(batch)
        except pa.ArrowException as exc:
            raise BadUploadError(
                f"the Parquet file cannot be read past data row {self._checks.rows:,}: "
                f"{str(exc)[:200]}"
            ) from exc
        finally:
            self.close()

    def _rows(self, batch: Any) -> Iterator[ParsedRow]:
        texts = batch.column(self.text_column).to_pylist()
        ids = batch.column(self.id_column).to_pylist() if self.id_column else None
        kept = [batch.column(name).to_pylist() for name in self.keep_columns]
        labels = batch.column(self.label_column).to_pylist() if self.label_column else None
        for i, text in enumerate(texts):
            row_num = self._checks.next_row_num()
            extra = {
                name: _as_json(values[i])
                for name, values in zip(self.keep_columns, kept, strict=True)
            } or None
            ext_id = _as_id(ids[i]) if ids is not None else None
            label = parse_label(labels[i], self._positive_from) if labels is not None else None
            yield self._checks.row(row_num, text or "", ext_id, extra, label=label)
