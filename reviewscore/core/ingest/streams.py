"""Byte streams under every reader: the upload limit, gzip (with its bomb guard), the first
bytes read ahead for sniffing and replayed, and physical lines read with a size cap."""

from __future__ import annotations

import codecs
import gzip
import io
import zlib
from typing import Any, BinaryIO

from reviewscore.core.errors import BadUploadError, UploadTooLargeError
from reviewscore.core.ingest.rows import IngestLimits

READ_SIZE = 256 * 1024
# How much of the (decompressed) file is read before anything is decided: the format, the
# encoding and the separator are judged on it. Nothing is stored before it has arrived (or the
# file ended), so it also delays the first chunk by that much of the upload.
SNIFF_BYTES = 1024 * 1024


def read_some(stream: Any, size: int) -> bytes:
    """What the stream has, up to `size` bytes, without waiting for all of them: a buffered
    stream's read(size) waits until it has `size` bytes or the end, so rows a slow client sent
    would sit unparsed (not stored, not scored) until another 256 KiB arrived; read1 returns
    what one read of the stream below gives."""
    read1 = getattr(stream, "read1", None)
    return bytes(read1(size) if read1 is not None else stream.read(size))


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


class GzipGuard(io.RawIOBase):
    """The stdlib's GzipFile (multi-member, detects a truncated stream) over the upload, refusing
    a stream that expands beyond the upload limit or far beyond any real file (a gzip bomb)."""

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


class Replay(io.RawIOBase):
    """The bytes read ahead for sniffing, then the rest of the stream."""

    def __init__(self, head: bytes, rest: Any) -> None:
        self._head = memoryview(head)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = read_some(self._rest, len(buffer))
        buffer[: len(data)] = data
        return len(data)


class CrToLf(io.RawIOBase):
    """Old Mac line ends (a lone CR) as LF, so lines can be split on LF alone."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = read_some(self._stream, len(buffer)).replace(b"\r", b"\n")
        buffer[: len(data)] = data
        return len(data)


class Transcoder(io.RawIOBase):
    """A stream in an encoding whose line break is not the byte 0x0A (UTF-16, UTF-32...), as
    UTF-8 bytes. Decoding runs ahead by one read here, so a decoding error names a nearby row,
    not always the exact one; every ASCII-compatible encoding is decoded line by line instead."""

    def __init__(self, stream: Any, encoding: str) -> None:
        self._stream = stream
        self._decoder = codecs.getincrementaldecoder(encoding)("strict")
        self._pending = b""
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._pending and not self._done:
            data = read_some(self._stream, READ_SIZE)
            self._done = not data
            text = self._decoder.decode(data, final=self._done)
            # Lone surrogates (from an escape codec) pass through, to be refused row by row.
            self._pending = text.encode("utf-8", "surrogatepass")
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def buffered(raw: io.RawIOBase) -> io.BufferedReader:
    return io.BufferedReader(raw, READ_SIZE)  # type: ignore[arg-type]


def read_head(stream: io.BufferedReader, size: int = SNIFF_BYTES) -> tuple[bytes, bool]:
    """Up to `size` bytes from the start, and whether that is the whole stream."""
    parts: list[bytes] = []
    have = 0
    while have < size:
        data = stream.read1(size - have)
        if not data:
            return b"".join(parts), True
        parts.append(data)
        have += len(data)
    return b"".join(parts), False


class RecordTooLongError(Exception):
    """A record over the limits, found while it is read; `reason` completes "data row N ..."."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CappedLines:
    """Physical lines of an ASCII-compatible stream, refusing a record whose lines add up to
    more than `cap` bytes or hold more than `max_separators` separators before it is decoded or
    parsed: a 200 MB row of commas costs at most `cap` bytes, never millions of fields."""

    def __init__(
        self, stream: io.BufferedReader, cap: int, separator: bytes, max_separators: int
    ) -> None:
        self._readline = stream.readline
        self._cap = cap
        self._separator = separator
        self._max_separators = max_separators
        self._bytes = 0
        self._separators = 0

    def read(self) -> bytes:
        """The next line with its line break; b"" at the end of the stream."""
        line = self._readline(self._cap - self._bytes + 1)
        self._bytes += len(line)
        if self._bytes > self._cap:
            raise RecordTooLongError(f"is longer than {self._cap:,} bytes")
        if self._separator:
            self._separators += line.count(self._separator)
            if self._separators > self._max_separators:
                raise RecordTooLongError(
                    f"has more than {self._max_separators:,} separators "
                    f"({self._separator.decode()!r})"
                )
        return line

    def new_record(self) -> None:
        self._bytes = self._separators = 0
