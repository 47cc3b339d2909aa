"""Reads the `file` part of a multipart/form-data body as a byte stream, while it arrives; the
fields before it are options, and the fields after it are read too, so they can be refused
instead of silently ignored."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from reviewscore.core.errors import BadUploadError, UploadTooLargeError

# How much of the body after the file is read to find fields there; more is refused.
MAX_TRAILER_BYTES = 1024 * 1024
# Bounds on what is kept before the file (and after it): a part's header section, the number of
# header lines in a part, the number of fields, and each field's value. Options are short.
MAX_PART_HEADER_BYTES = 16 * 1024
MAX_PART_HEADERS = 16
MAX_FIELDS = 32
MAX_FIELD_BYTES = 64 * 1024


class MultipartFileReader(io.RawIOBase):
    """A blocking reader over one multipart field. The fields before it are kept in `fields`;
    at the file's end the rest of the body is read and `check_trailer` is called with the
    fields found after the file (it raises to refuse them)."""

    def __init__(
        self,
        pull: Callable[[], bytes],
        boundary: bytes,
        field: str = "file",
        check_trailer: Callable[[dict[str, str]], Any] | None = None,
    ) -> None:
        self._pull = pull
        self._check_trailer = check_trailer
        self.late_fields: dict[str, str] = {}
        self._trailer_checked = False
        self._field = field.encode()
        self._pending: list[bytes] = []
        self._in_file = False
        self._file_seen = False
        self._file_done = False
        self._body_done = False
        # A header's pieces, as the parser hands them over, joined once at its end.
        self._header_name: list[bytes] = []
        self._header_value: list[bytes] = []
        self._header_bytes = 0
        self._headers: dict[bytes, bytes] = {}
        self._part_name = b""
        self._part_value = bytearray()
        self._field_count = 0
        self.fields: dict[str, str] = {}
        # Every value of a field sent more than once (labels: one `label` field per pair).
        self.repeated: dict[str, list[str]] = {}
        self._parser_bytes = 0
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
            # The parser's own bounds (per header line, header lines per part), set to ours.
            max_header_size=MAX_PART_HEADER_BYTES,
            max_header_count=MAX_PART_HEADERS,
        )

    # parser callbacks ------------------------------------------------------------------
    def _on_part_begin(self) -> None:
        self._headers = {}
        self._header_name = []
        self._header_value = []
        self._header_bytes = 0
        self._part_value = bytearray()

    def _count_header_bytes(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > MAX_PART_HEADER_BYTES:
            raise _headers_too_large()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header_bytes(end - start)
        self._header_name.append(data[start:end])

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_header_bytes(end - start)
        self._header_value.append(data[start:end])

    def _on_header_end(self) -> None:
        key = b"".join(self._header_name).lower()
        self._headers[key] = self._headers.get(key, b"") + b"".join(self._header_value)
        self._header_name = []
        self._header_value = []

    def _on_headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._part_name = params.get(b"name", b"")
        if self._part_name == self._field and not self._file_seen:
            self._in_file = self._file_seen = True
            raw_name = params.get(b"filename")
            self.filename = raw_name.decode("utf-8", "replace") if raw_name else None
            ctype = self._headers.get(b"content-type")
            self.content_type = ctype.decode("latin-1") if ctype else None
            return
        self._field_count += 1
        if self._field_count > MAX_FIELDS:
            raise BadUploadError(
                f"the form has more than {MAX_FIELDS} form fields besides the file: send only "
                "the options (each once) and the file",
                400,
            )

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self._pending.append(data[start:end])
            return
        if len(self._part_value) + (end - start) > MAX_FIELD_BYTES:
            name = self._part_name.decode("utf-8", "replace")[:40]
            raise UploadTooLargeError(
                f"form field {name!r} is longer than {MAX_FIELD_BYTES:,} bytes, the limit for "
                "one form field"
            )
        self._part_value += data[start:end]

    def _on_part_end(self) -> None:
        if self._in_file:
            self._in_file = False
            self._file_done = True
        elif self._part_name:
            fields = self.late_fields if self._file_done else self.fields
            name = self._part_name.decode("utf-8", "replace")
            fields[name] = self._part_value.decode("utf-8", "replace")
            if not self._file_done:
                self.repeated.setdefault(name, []).append(fields[name])

    # reading --------------------------------------------------------------------------
    def _feed(self) -> bool:
        data = self._pull()
        if not data:
            self._body_done = True
            return False
        self._parser_bytes += len(data)
        try:
            self._parser.write(data)
        except BadUploadError:
            raise  # a bound of ours, raised from a callback
        except MultipartParseError as exc:
            if str(exc).startswith("Maximum header size"):
                raise _headers_too_large() from exc
            if str(exc).startswith("Maximum header count"):
                raise BadUploadError(
                    f"a part of the form has more than {MAX_PART_HEADERS} header lines", 400
                ) from exc
            raise BadUploadError(f"the multipart body is malformed: {exc}", 400) from exc
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

    def _read_trailer(self) -> None:
        """Reads the body after the file (bounded) and has its fields checked, once."""
        if self._trailer_checked:
            return
        self._trailer_checked = True
        read = 0
        while not self._body_done:
            if read > MAX_TRAILER_BYTES:
                raise BadUploadError(
                    f"the form goes on for more than {MAX_TRAILER_BYTES:,} bytes after the "
                    "file: send the file as the last field",
                    400,
                )
            before = self._parser_bytes
            self._feed()
            read += self._parser_bytes - before
        if self._check_trailer is not None:
            self._check_trailer(self.late_fields)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            if self._file_done:
                self._read_trailer()
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


def _headers_too_large() -> UploadTooLargeError:
    return UploadTooLargeError(
        f"a part of the form has more than {MAX_PART_HEADER_BYTES:,} bytes of headers, the limit "
        "for one part's headers"
    )


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
