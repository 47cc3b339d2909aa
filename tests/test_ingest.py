"""Ingest on its own (CSV): what is accepted, what is refused and with which words, and the
bounds that hold while a file is read (a giant row, bad bytes deep in a file)."""

from __future__ import annotations

import csv
import gzip
import io
import threading
import time
import tracemalloc
from collections.abc import Iterator

import pytest

from reviewscore.core.errors import BadUploadError, UploadTooLargeError
from reviewscore.core.ingest import IngestLimits, ParsedRow, Reviews, UploadOptions, open_reviews
from tests.conftest import sample_reviews

LIMITS = IngestLimits(max_upload_bytes=10**9, max_text_bytes=1000, max_rows=1000, max_gzip_ratio=50)
# max(4 x 1,000, 1 MiB): the longest record these limits read.
RECORD_CAP = 1024 * 1024


def read(data: bytes, limits: IngestLimits = LIMITS, **options: object) -> Reviews:
    return open_reviews(io.BytesIO(data), limits, UploadOptions(**options))  # type: ignore[arg-type]


def parse(data: bytes, **options: object) -> list[tuple[int, str | None, str, str | None]]:
    return [(r.row_num, r.ext_id, r.text, r.error) for r in read(data, **options)]


def test_text_column_defaults_to_text_then_review() -> None:
    assert parse(b"review,x\ngood,1\n") == [(1, None, "good", None)]
    assert parse(b"text,review\na,b\n")[0][2] == "a"


def test_quoted_newlines_bom_and_crlf_are_read() -> None:
    data = b'\xef\xbb\xbfid,text\r\n7,"two\r\nlines, and ""quotes"""\r\n'
    assert parse(data) == [(1, "7", 'two\r\nlines, and "quotes"', None)]


def test_gzip_is_detected_by_its_bytes() -> None:
    assert parse(gzip.compress(b"text\nfine\n"))[0][2] == "fine"


def test_blank_texts_and_short_rows_get_row_errors() -> None:
    rows = parse(b"id,text\n1,  \n2\n3,ok\n")
    assert [r[3] for r in rows] == ["empty text", "row has 1 fields, the header has 2", None]


def test_an_overlong_text_is_a_row_error() -> None:
    rows = parse(b"text\n" + b"a" * 1500 + b"\nok\n")
    assert rows[0][3] == "text is 1,500 bytes, over the limit of 1,000"
    assert rows[1][3] is None


def test_nul_characters_are_dropped() -> None:
    assert parse(b"text\nsome review ab\x00c\n")[0][2] == "some review abc"


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "the file is empty"),
        (b"\n \r\n", "the file is empty"),
        (b"\x89PNG\r\n\x1a\nrest", "PNG image"),
        (b"title,body\nx,y\n", "the file's columns are: 'title', 'body'"),
        (b'text\n"never closed\n', "malformed CSV at data row 1"),
    ],
)
def test_unreadable_files_are_refused_with_a_reason(data: bytes, words: str) -> None:
    with pytest.raises(BadUploadError, match=words):
        parse(data)


def test_latin1_is_read_when_named() -> None:
    assert parse(b"text\nsch\xf6n\n", encoding="latin-1")[0][2] == "schön"


def test_a_gzip_bomb_is_refused() -> None:
    # 30 MB of rows in about 30 KB.
    bomb = gzip.compress(b"text\n" + (b"a" * 999 + b"\n") * 30_000)
    with pytest.raises(UploadTooLargeError, match="expands more than 50x"):
        list(read(bomb, IngestLimits(10**9, 1000, 10**6, 50)))


def test_too_many_rows_is_refused_while_streaming() -> None:
    reader = read(b"text\na\nb\nc\nd\n", IngestLimits(10**8, 1000, 3, 50))
    with pytest.raises(UploadTooLargeError, match="more than 3 rows"):
        list(reader)


# --- columns ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header", ["id", "ID", "review_id", "Review ID", "reviewId", "uuid", "key", "doc_id"]
)
def test_an_id_like_column_is_the_id_without_being_named(header: str) -> None:
    reader = read(f"{header},text\n-1,fine\n".encode())
    assert reader.id_column == header
    assert [(r.ext_id, r.text) for r in reader] == [("-1", "fine")]


def test_id_column_at_row_numbers_the_rows_even_with_an_id_column() -> None:
    reader = read(b"id,text\nx,fine\n", id_column="@row")
    assert reader.id_column is None and [r.ext_id for r in reader] == [None]


def test_a_named_column_matches_ignoring_case() -> None:
    reader = read(b"Comment,Review_ID\nfine,7\n", text_column="comment", id_column="review_id")
    assert (reader.text_column, reader.id_column) == ("Comment", "Review_ID")


@pytest.mark.parametrize(
    ("header", "words"),
    [
        (b"id,text,label,text", "'text', 'text' at columns 2 and 4): rename one"),
        (b"Text,id,text", "'Text', 'text' at columns 1 and 3): pass text_column"),
        (
            b"id,ID,text",
            "id column is named more than once in the header ('id', 'ID' at columns 1 and 2)",
        ),
    ],
)
def test_a_column_named_twice_is_refused_naming_both_positions(header: bytes, words: str) -> None:
    with pytest.raises(BadUploadError, match=words.replace("(", r"\(").replace(")", r"\)")):
        read(header + b"\n1,a,b,c\n")


def test_an_error_lists_few_and_short_column_names() -> None:
    header = ",".join(f"column number {i} " + "x" * 100 for i in range(5000))
    with pytest.raises(BadUploadError) as refused:
        read(header.encode() + b"\n")
    message = str(refused.value)
    assert "and 4,988 more" in message and len(message) < 800, message


def test_kept_columns_come_with_each_row() -> None:
    reader = read(b"id,text,Title,stars\n1,fine,Heat,5\n2,bad\n", keep_columns=("title", "STARS"))
    assert reader.keep_columns == ["Title", "stars"]
    assert [r.extra for r in reader] == [
        {"Title": "Heat", "stars": "5"},
        {"Title": None, "stars": None},
    ]


def test_a_missing_kept_column_is_named() -> None:
    with pytest.raises(BadUploadError, match="keep_columns 'author' is not in the file"):
        read(b"id,text\n1,fine\n", keep_columns=("author",))


# --- bounded memory per row (issue 11, item 2) --------------------------------------------------


class Repeated(io.RawIOBase):
    """`head`, then `unit` repeated to about `size` bytes, then a line break: a file never held
    in memory at once (it is made 256 KiB at a time)."""

    def __init__(self, head: bytes, unit: bytes, size: int) -> None:
        self._parts: Iterator[bytes] = self._generate(head, unit, size)
        self._rest = b""

    @staticmethod
    def _generate(head: bytes, unit: bytes, size: int) -> Iterator[bytes]:
        yield head
        block = unit * (256 * 1024 // len(unit))
        for _ in range(size // len(block)):
            yield block
        yield b"\n"

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._rest:
            self._rest = next(self._parts, b"")
            if not self._rest:
                return 0
        n = min(len(buffer), len(self._rest))
        buffer[:n] = self._rest[:n]
        self._rest = self._rest[n:]
        return n


def _peak_while_reading(stream: io.RawIOBase) -> tuple[list[ParsedRow], str, int]:
    tracemalloc.start()
    rows: list[ParsedRow] = []
    try:
        with pytest.raises(BadUploadError) as refused:
            rows.extend(open_reviews(stream, LIMITS, UploadOptions()))  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return rows, str(refused.value), peak


def test_a_row_of_commas_is_refused_while_it_is_read_not_after() -> None:
    # 40 MB of commas after three good rows: before the cap, the csv module built a list of
    # 40 million fields (~10x the row's size) before anything could refuse it.
    bomb = Repeated(b"id,text\n1,good\n2,bad\n3,fine\n", b",", 40 * 1024 * 1024)
    rows, message, peak = _peak_while_reading(bomb)
    assert [r.ext_id for r in rows] == ["1", "2", "3"]
    assert message.startswith("data row 4 ") and "over the limit for one record" in message
    assert peak < 12 * RECORD_CAP, f"peak {peak:,} bytes while reading a 40 MB row"


def test_a_record_spread_over_many_short_lines_is_capped_too() -> None:
    # Each physical line is short; the quoted fields make it all one record.
    head = b"id,text\n1,good\n2,"
    rows, message, peak = _peak_while_reading(Repeated(head, b'"x\n",', 20 * 1024 * 1024))
    assert [r.ext_id for r in rows] == ["1"]
    assert message.startswith("data row 2 ") and peak < 12 * RECORD_CAP


def test_a_row_with_too_many_separators_is_refused() -> None:
    with pytest.raises(BadUploadError, match=r"data row 1 has more than 10,000 separators \(','\)"):
        list(read(b"id,text\n" + b"," * 20_000 + b"\n"))


# --- bad bytes deep in a file (issue 11, item 12) ---------------------------------------------


def _reviews_csv(n: int) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "text"])
    for i, review in enumerate(sample_reviews(n, seed=11), start=1):
        writer.writerow([f"r{i}", review["text"]])
    return out.getvalue().encode("utf-8")


def test_invalid_utf8_at_row_10001_names_that_row_and_keeps_every_row_before_it() -> None:
    # 10,000 real reviews (13 MB: far past the part the encoding is detected on), then a row
    # with a byte that is not UTF-8. The decoder used to read ahead: the error named row 9,997
    # and the rows decoded with the bad block were lost.
    data = _reviews_csv(10_000) + b"r10001,caf\xe9 au lait\nr10002,fine\n"
    reader = read(data, limits=IngestLimits(10**9, 100_000, 100_000, 50))
    assert reader.encoding == "utf-8"
    rows: list[ParsedRow] = []
    with pytest.raises(BadUploadError) as refused:
        rows.extend(reader)
    assert "not valid UTF-8 at data row 10,001 (byte 0xe9)" in str(refused.value)
    assert "encoding=" in str(refused.value)
    assert len(rows) == 10_000 and rows[-1].ext_id == "r10000"


def test_invalid_bytes_name_their_row_in_a_small_file_read_as_utf8() -> None:
    data = b"id,text\n" + b"".join(b"%d,fine\n" % i for i in range(1, 10_001)) + b"x,\xff\n"
    rows: list[ParsedRow] = []
    with pytest.raises(BadUploadError, match="at data row 10,001"):
        rows.extend(read(data, limits=IngestLimits(10**9, 1000, 100_000, 50), encoding="utf-8"))
    assert len(rows) == 10_000


class PausingUpload(io.RawIOBase):
    """A client that sends the start of its file, then pauses (until `resume` is set)."""

    def __init__(self, start: bytes, rest: bytes) -> None:
        self.pieces = [start]
        self.rest = rest
        self.resume = threading.Event()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if not self.pieces:
            if not self.rest:
                return 0
            self.resume.wait(30)
            self.pieces, self.rest = [self.rest], b""
        n = min(len(buffer), len(self.pieces[0]))
        buffer[:n] = self.pieces[0][:n]
        self.pieces[0] = self.pieces[0][n:]
        if not self.pieces[0]:
            self.pieces.pop()
        return n


def test_rows_a_paused_client_sent_are_parsed_without_waiting_for_more() -> None:
    """A buffered read waited for 256 KiB more before handing on rows already received: a slow
    client's rows sat unparsed (not stored, not scored), 250 IMDB reviews here."""
    rows = [r["text"] for r in sample_reviews(1200, seed=3)]
    lines = [b"id,text"] + [
        f'r{i},"{text.replace(chr(34), chr(34) * 2)}"'.encode() for i, text in enumerate(rows)
    ]
    start, rest = b"\n".join(lines[:1051]) + b"\n", b"\n".join(lines[1051:]) + b"\n"
    upload = PausingUpload(start, rest)
    seen: list[ParsedRow] = []
    limits = IngestLimits(
        max_upload_bytes=10**9, max_text_bytes=10**6, max_rows=10**6, max_gzip_ratio=50
    )
    reader = threading.Thread(
        target=lambda: seen.extend(open_reviews(upload, limits, UploadOptions(id_column="id"))),
        daemon=True,
    )
    reader.start()
    deadline = time.monotonic() + 20
    while len(seen) < 1050 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(seen) == 1050, "every row sent before the pause is parsed during it"
    upload.resume.set()
    reader.join(20)
    assert [r.ext_id for r in seen] == [f"r{i}" for i in range(1200)]
