"""JSON Lines uploads: one JSON object per line; the text, the id and kept values are fields or
dotted paths (`review.text`), chosen against the first object. Numbers used as ids keep the
exact characters they were written with."""

from __future__ import annotations

import codecs
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from reviewscore.core.errors import BadUploadError
from reviewscore.core.ingest.columns import TEXT_COLUMN_DEFAULTS, choose, find
from reviewscore.core.ingest.labels import parse_label
from reviewscore.core.ingest.rows import (
    IngestLimits,
    ParsedRow,
    RecordSpec,
    Reviews,
    RowChecks,
    UploadOptions,
)
from reviewscore.core.ingest.text import TextLines

# Nested objects are offered as dotted paths down to this depth, and at most this many paths.
MAX_DEPTH = 4
MAX_PATHS = 1000


class JsonNumber(str):
    """A JSON number as the characters it was written with (an id "007" or -1.50 stays so)."""


def _loads(line: str) -> Any:
    return json.loads(line, parse_int=JsonNumber, parse_float=JsonNumber)


def _plain(value: Any) -> Any:
    """A parsed value with its numbers as numbers again (for kept columns)."""
    if isinstance(value, JsonNumber):
        return int(value) if value.lstrip("-").isdigit() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _kind(value: Any) -> str:
    if isinstance(value, JsonNumber):
        return "a number"
    if isinstance(value, bool):
        return "true/false"
    kinds = {dict: "an object", list: "an array", str: "a string", type(None): "null"}
    return kinds.get(type(value), "a value")


def flatten(obj: dict[str, Any]) -> list[tuple[str, tuple[str, ...]]]:
    """Every field of an object as (dotted name, path), nested objects included."""
    found: list[tuple[str, tuple[str, ...]]] = []

    def walk(value: dict[str, Any], path: tuple[str, ...]) -> None:
        for key, child in value.items():
            if len(found) >= MAX_PATHS:
                return
            here = (*path, key)
            found.append((".".join(here), here))
            if isinstance(child, dict) and len(here) < MAX_DEPTH:
                walk(child, here)

    walk(obj, ())
    return found


def _get(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


class JsonLinesReviews(Reviews):
    format = "jsonl"

    def __init__(
        self,
        stream: io.BufferedReader,
        head: bytes,
        at_eof: bool,
        limits: IngestLimits,
        options: UploadOptions,
    ) -> None:
        self._first_read = False
        self._text = TextLines(
            stream, head, at_eof, limits=limits, options=options, where=self._where
        )
        self.encoding = self._text.encoding
        self._lines = self._records(self._text.lines())
        self._checks = RowChecks(limits, None)
        captured: list[bytes] = []
        self._text.captured = captured
        self._first = self._read_first()
        self._first_raw = captured[-1]
        self._text.captured = None
        self._first_read = True
        fields = flatten(self._first)
        names = [name for name, _ in fields]
        self.columns = [name for name, path in fields if len(path) == 1]
        if not options.text_column:
            options = self._nested_text_default(fields, options)
        choice = choose(names, options, what="fields")
        self.text_column = names[choice.text]
        self.id_column = None if choice.id is None else names[choice.id]
        self.keep_columns = [names[i] for i in choice.keep]
        self._text_path = fields[choice.text][1]
        self._id_path = None if choice.id is None else fields[choice.id][1]
        self._keep_paths = [(names[i], fields[i][1]) for i in choice.keep]
        self.label_column = None if choice.label is None else names[choice.label]
        self._label_path = None if choice.label is None else fields[choice.label][1]
        self._positive_from = options.positive_from
        self._checks.id_column = self.id_column

    def _nested_text_default(
        self, fields: list[tuple[str, tuple[str, ...]]], options: UploadOptions
    ) -> UploadOptions:
        """Without text_column, the text is a default name among the first object's string
        fields: at the top level, else as the last part of a nested path ({"review": {"text":
        ...}} gives review.text) when only one such path exists."""
        strings = [
            (name, path) for name, path in fields if isinstance(_get(self._first, path), str)
        ]
        top = [name for name, path in strings if len(path) == 1]
        for candidate in TEXT_COLUMN_DEFAULTS:
            index = find(top, candidate, "text_column", exact_first=False)
            if index is not None:
                return replace(options, text_column=top[index])
        for candidate in TEXT_COLUMN_DEFAULTS:
            nested = [name for name, path in strings if path[-1].casefold() == candidate]
            if len(nested) == 1:
                return replace(options, text_column=nested[0])
        return options

    def _where(self) -> str:
        if not self._first_read:
            return "line 1"
        return f"data row {self._checks.rows + 1:,}"

    def _records(self, lines: Iterator[str]) -> Iterator[str]:
        """The lines, each its own record: the cap is on one line, never on the file so far."""
        for line in lines:
            self._text.new_record()
            yield line

    def _read_first(self) -> dict[str, Any]:
        for line in self._lines:
            if not line.strip():
                continue
            stripped = line.strip()
            try:
                value = _loads(stripped)
            except (ValueError, RecursionError) as exc:
                if stripped in ("{", "["):
                    raise BadUploadError(
                        "the first line holds only part of a JSON value (a pretty-printed JSON "
                        "file?): upload JSON Lines, one object per line (e.g. jq -c "
                        "'.[]' reviews.json > reviews.jsonl)"
                    ) from exc
                raise BadUploadError(
                    f"the first line is not JSON ({str(exc)[:80]}): upload JSON Lines, one "
                    'object per line like {"id": "1", "text": "..."}, or pass format'
                ) from exc
            if not isinstance(value, dict):
                raise BadUploadError(
                    f"the first line is {_kind(value)}, not a JSON object: upload JSON Lines, "
                    'one object per line like {"id": "1", "text": "..."}'
                )
            if not value:
                raise BadUploadError("the first line is an empty JSON object: it names no field")
            return value
        raise BadUploadError("the file is empty")

    def layout(self) -> JsonLayout:
        return JsonLayout(
            text_column=self.text_column,
            text_path=self._text_path,
            id_column=self.id_column,
            id_path=self._id_path,
            keep_paths=tuple(self._keep_paths),
            label_path=self._label_path,
            positive_from=self._positive_from,
        )

    def __iter__(self) -> Iterator[ParsedRow]:
        layout, checks = self.layout(), self._checks
        yield layout.row(checks, self._first)
        for line in self._lines:
            if line.strip():
                yield layout.line(checks, line)

    def records(self) -> Iterator[tuple[int, bytes]]:
        """Each data line's bytes, numbered; each is read (as JSON) by whoever parses it."""
        first = self._first_raw
        if self._text.codec == "utf-8-sig":
            first = first.removeprefix(codecs.BOM_UTF8)
        yield self._checks.next_row_num(), first
        captured: list[bytes] = []
        self._text.captured = captured
        for line in self._lines:
            raw = captured[-1]
            captured.clear()
            if line.strip():
                yield self._checks.next_row_num(), raw

    def record_spec(self) -> RecordSpec | None:
        codec = self._text.record_codec
        return None if codec is None else RecordSpec.of(self, codec, self._checks, self.layout())


@dataclass(frozen=True)
class JsonLayout:
    """Where a JSON line's text, id, kept values and label are, resolved against the upload's
    first object: what a worker needs to read lines an API process stored unparsed."""

    text_column: str
    text_path: tuple[str, ...]
    id_column: str | None
    id_path: tuple[str, ...] | None
    keep_paths: tuple[tuple[str, tuple[str, ...]], ...]
    label_path: tuple[str, ...] | None
    positive_from: float | None

    @classmethod
    def of(cls, spec: RecordSpec) -> JsonLayout:
        fields = dict(spec.layout)
        for name in ("text_path", "id_path", "label_path"):
            if fields[name] is not None:
                fields[name] = tuple(fields[name])
        fields["keep_paths"] = tuple((name, tuple(path)) for name, path in fields["keep_paths"])
        return cls(**fields)

    def line(self, checks: RowChecks, line: str) -> ParsedRow:
        try:
            value = _loads(line)
        except (ValueError, RecursionError) as exc:
            row_num = checks.next_row_num()
            return checks.row(row_num, "", None, None, f"line is not valid JSON: {str(exc)[:200]}")
        if not isinstance(value, dict):
            row_num = checks.next_row_num()
            return checks.row(row_num, "", None, None, f"line is {_kind(value)}, not a JSON object")
        return self.row(checks, value)

    def row(self, checks: RowChecks, obj: dict[str, Any]) -> ParsedRow:
        row_num = checks.next_row_num()
        ext_id, id_error = self._id(obj)
        extra = {name: _plain(_get(obj, path)) for name, path in self.keep_paths} or None
        text = _get(obj, self.text_path)
        label = None
        if self.label_path is not None:
            # A JSON number is a JsonNumber (its digits as a str): it reads as a number.
            label = parse_label(_get(obj, self.label_path), self.positive_from)
        if id_error:
            return checks.row(row_num, "", None, extra, id_error)
        if text is None:
            return checks.row(row_num, "", ext_id, extra, f"no {self.text_column!r} field")
        if not isinstance(text, str) or isinstance(text, JsonNumber):
            error = f"{self.text_column!r} is {_kind(text)}, not a string"
            return checks.row(row_num, "", ext_id, extra, error)
        return checks.row(row_num, str(text), ext_id, extra, label=label)

    def _id(self, obj: dict[str, Any]) -> tuple[str | None, str | None]:
        if self.id_path is None:
            return None, None
        value = _get(obj, self.id_path)
        if value is None:
            return None, None  # an empty id: a row error, as in every format
        if isinstance(value, str):  # a JsonNumber too: its characters as written
            return str(value), None
        return None, f"{self.id_column!r} is {_kind(value)}, not a string or number"


def parse_records(spec: RecordSpec, records: Iterable[str], checks: RowChecks) -> list[ParsedRow]:
    """The rows of lines stored unparsed (JsonLinesReviews.records), as the reader would have
    yielded them."""
    layout = JsonLayout.of(spec)
    return [layout.line(checks, line) for line in records]
