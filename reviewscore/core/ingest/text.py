"""A text upload as lines: its encoding chosen (the option, else detected on the first bytes),
each physical line read with a size cap and decoded on its own, so a decoding error names the
row it is in and every row before it has already been handed on."""

from __future__ import annotations

import codecs
import io
from collections.abc import Callable, Iterator

from reviewscore.core.errors import BadUploadError
from reviewscore.core.ingest.detect import (
    codec_name,
    detect_encoding,
    display_name,
    first_lines,
    guess_legacy,
    is_ascii_compatible,
)
from reviewscore.core.ingest.rows import MAX_FIELDS, IngestLimits, UploadOptions
from reviewscore.core.ingest.streams import (
    CappedLines,
    CrToLf,
    RecordTooLongError,
    Transcoder,
    buffered,
)

# Multi-byte codecs whose decoding of a line does not depend on the lines before it.
STATELESS_CODECS = frozenset({"utf-8", "utf-8-sig", "ascii"})


def _single_byte(codec: str) -> bool:
    try:
        return len(bytes(range(256)).decode(codec, "replace")) == 256
    except LookupError:
        return False


class TextLines:
    """The decoded lines of an upload. `where()` is asked, when something fails, which row is
    being read ("the header row", "data row 10,001"), so messages name it."""

    def __init__(
        self,
        stream: io.BufferedReader,
        head: bytes,
        at_eof: bool,
        *,
        limits: IngestLimits,
        options: UploadOptions,
        where: Callable[[], str],
    ) -> None:
        encoding = options.encoding
        self.codec = codec_name(encoding) if encoding else detect_encoding(head, at_eof)
        self.encoding = display_name(self.codec)
        self.where = where
        self.exact_rows = is_ascii_compatible(self.codec)
        line_codec = self.codec
        if not self.exact_rows:
            stream, line_codec = buffered(Transcoder(stream, self.codec)), "utf-8"
        self.sample = first_lines(head, self.codec, at_eof)
        if "\r" in self.sample and "\n" not in self.sample:
            stream = buffered(CrToLf(stream))
            self.sample = self.sample.replace("\r", "\n")
        self._stream = stream
        self._line_codec = line_codec
        self._decoder = codecs.getincrementaldecoder(line_codec)(
            "strict" if self.exact_rows else "surrogatepass"
        )
        self._max_record_bytes = limits.max_row_bytes
        self._lines: CappedLines | None = None
        # The raw bytes of each line read, while a reader collects records to store unparsed
        # (Reviews.records); None: not kept.
        self.captured: list[bytes] | None = None

    @property
    def record_codec(self) -> tuple[str, str] | None:
        """How the captured bytes decode again (codec, errors), line by line or a record at a
        time alike; None for a codec that carries state from line to line (ISO-2022, UTF-7):
        its records cannot be read apart from the file."""
        if self._line_codec == "utf-8" and not self.exact_rows:  # transcoded from UTF-16, ...
            return "utf-8", "surrogatepass"
        if self._line_codec == "utf-8-sig":  # the BOM is the file's, before its first line
            return "utf-8", "strict"
        if self._line_codec in STATELESS_CODECS or _single_byte(self._line_codec):
            return self._line_codec, "strict"
        return None

    def lines(self, separator: str = "") -> Iterator[str]:
        """The lines, with their line breaks; a record is counted from one `new_record()` to the
        next. `separator` is counted too: too many in one record end the upload."""
        self._lines = CappedLines(
            self._stream,
            self._max_record_bytes,
            # (utf-8-sig would put a BOM in front of the separator's bytes.)
            separator.encode(self._line_codec.removesuffix("-sig")) if separator else b"",
            MAX_FIELDS,
        )
        return self._decoded(self._lines)

    def new_record(self) -> None:
        if self._lines is not None:
            self._lines.new_record()

    def _decoded(self, lines: CappedLines) -> Iterator[str]:
        decode = self._decoder.decode
        while True:
            line = b""
            try:
                line = lines.read()
                text = decode(line, not line)
                if self.captured is not None:
                    self.captured.append(line)
            except RecordTooLongError as exc:
                raise BadUploadError(
                    f"{self.where()} {exc.reason}, over the limit for one record: check the "
                    "file's quotes and delimiter"
                ) from exc
            except UnicodeError as exc:
                raise self.decode_error(exc, line) from exc
            if not line:
                return
            yield text

    def decode_error(self, exc: UnicodeError, line: bytes) -> BadUploadError:
        place = f"at {self.where()}" if self.exact_rows else f"near {self.where()}"
        if not isinstance(exc, UnicodeDecodeError):
            # Raised by some codecs instead (UTF-16 cut mid-character, punycode...).
            return BadUploadError(
                f"the file cannot be read as {self.encoding} {place} ({exc}): pass the "
                "encoding it was saved in (encoding=...)"
            )
        byte = exc.object[exc.start] if exc.start < len(exc.object) else 0
        return BadUploadError(
            f"the file is not valid {self.encoding.upper()} {place} (byte 0x{byte:02x}): "
            f"pass the encoding it was saved in (e.g. encoding={self._suggestion(line)})"
        )

    def _suggestion(self, line: bytes) -> str:
        if line and self.codec == "utf-8-sig":
            try:
                return guess_legacy(line)
            except BadUploadError:
                pass
        return "cp1252" if self.codec != "cp1252" else "utf-8"


def split_lines(text: str) -> Iterator[str]:
    """The lines of `text` as a reader got them: each ends after a "\n" (the last may not).
    Not str.splitlines, which also breaks at U+0085, U+2028 and the like."""
    start = 0
    while (end := text.find("\n", start)) >= 0:
        yield text[start : end + 1]
        start = end + 1
    if start < len(text):
        yield text[start:]
