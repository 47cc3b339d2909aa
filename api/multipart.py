"""Reads the `file` part of a multipart/form-data body as a byte stream, while it arrives."""

from __future__ import annotations

import io
from collections.abc import Callable

from python_multipart.multipart import MultipartParser, parse_options_header

from reviewscore.core.errors import BadUploadError


class MultipartFileReader(io.RawIOBase):
    """A blocking reader over one multipart field; the other fields seen before it are kept."""

    def __init__(self, pull: Callable[[], bytes], boundary: bytes, field: str = "file") -> None:
        self._pull = pull
        self._field = field.encode()
        self._pending: list[bytes] = []
        self._in_file = False
        self._file_seen = False
        self._file_done = False
        self._body_done = False
        self._header_name = b""
        self._headers: dict[bytes, bytes] = {}
        self._part_name = b""
        self._part_value = bytearray()
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.content_type: str | None = None
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
            },
        )

    # parser callbacks ------------------------------------------------------------------
    def _on_part_begin(self) -> None:
        self._headers = {}
        self._header_name = b""
        self._part_value = bytearray()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        key = self._header_name.lower()
        self._headers[key] = self._headers.get(key, b"") + data[start:end]

    def _on_header_end(self) -> None:
        self._header_name = b""

    def _on_headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._part_name = params.get(b"name", b"")
        if self._part_name == self._field and not self._file_seen:
            self._in_file = self._file_seen = True
            raw_name = params.get(b"filename")
            self.filename = raw_name.decode("utf-8", "replace") if raw_name else None
            ctype = self._headers.get(b"content-type")
            self.content_type = ctype.decode("latin-1") if ctype else None

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self._pending.append(data[start:end])
        elif len(self._part_value) < 4096:
            self._part_value += data[start:end]

    def _on_part_end(self) -> None:
        if self._in_file:
            self._in_file = False
            self._file_done = True
        elif self._part_name:
            self.fields[self._part_name.decode("utf-8", "replace")] = self._part_value.decode(
                "utf-8", "replace"
            )

    # reading --------------------------------------------------------------------------
    def _feed(self) -> bool:
        data = self._pull()
        if not data:
            self._body_done = True
            return False
        try:
            self._parser.write(data)
        except Exception as exc:  # noqa: BLE001 - python-multipart raises its own error types
            raise BadUploadError(f"the multipart body is malformed: {exc}", 400) from exc
        return True

    def wait_for_file(self) -> None:
        """Reads until the file part starts; fails if the body has no `file` field."""
        while not self._file_seen and not self._body_done:
            self._feed()
        if not self._file_seen:
            raise BadUploadError(
                f"the form has no {self._field.decode()!r} field: send the CSV as "
                f"multipart field {self._field.decode()!r}",
            )

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            if self._file_done:
                return 0
            if not self._feed():
                if not self._file_done:
                    raise BadUploadError("the multipart body ended in the middle of the file", 400)
                return 0
        chunk = self._pending[0]
        n = min(len(buffer), len(chunk))
        buffer[:n] = chunk[:n]
        if n == len(chunk):
            self._pending.pop(0)
        else:
            self._pending[0] = chunk[n:]
        return n


class BodyReader(io.RawIOBase):
    """A blocking reader over a raw request body (text/csv or gzip)."""

    def __init__(self, pull: Callable[[], bytes]) -> None:
        self._pull = pull
        self._rest = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if not self._rest:
            self._rest = self._pull()
            if not self._rest:
                return 0
        n = min(len(buffer), len(self._rest))
        buffer[:n] = self._rest[:n]
        self._rest = self._rest[n:]
        return n
