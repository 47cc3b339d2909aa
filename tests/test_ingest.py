"""CSV ingest on its own: what is accepted, what is refused, and with which words."""

from __future__ import annotations

import gzip
import io

import pytest

from reviewscore.core.errors import BadUploadError, UploadTooLargeError
from reviewscore.core.ingest import CsvReviews, IngestLimits

LIMITS = IngestLimits(max_upload_bytes=10**8, max_text_bytes=1000, max_rows=1000, max_gzip_ratio=50)


def parse(data: bytes, **options: str) -> list[tuple[int, str | None, str, str | None]]:
    reader = CsvReviews(io.BytesIO(data), LIMITS, **options)  # type: ignore[arg-type]
    return [(r.row_num, r.ext_id, r.text, r.error) for r in reader]


def test_text_column_defaults_to_text_then_review() -> None:
    assert parse(b"review,x\ngood,1\n") == [(1, None, "good", None)]
    assert parse(b"Text,review\na,b\n")[0][2] == "a"


def test_quoted_newlines_bom_and_crlf_are_read() -> None:
    data = b'\xef\xbb\xbfid,text\r\n7,"two\r\nlines, and ""quotes"""\r\n'
    assert parse(data, id_column="id") == [(1, "7", 'two\r\nlines, and "quotes"', None)]


def test_gzip_is_detected_by_its_bytes() -> None:
    assert parse(gzip.compress(b"text\nfine\n"))[0][2] == "fine"


def test_blank_texts_and_short_rows_get_row_errors() -> None:
    rows = parse(b"id,text\n1,  \n2\n3,ok\n", id_column="id")
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
        (b"\x89PNG\r\n\x1a\nrest", "PNG image"),
        (b"title,body\nx,y\n", "the file's columns are: 'title', 'body'"),
        (b'text\n"never closed\n', "malformed CSV at data row 1"),
        (b"text\nsch\xf6n\n", "not valid UTF-8"),
    ],
)
def test_unreadable_files_are_refused_with_a_reason(data: bytes, words: str) -> None:
    with pytest.raises(BadUploadError, match=words):
        parse(data)


def test_latin1_is_read_when_named() -> None:
    assert parse(b"text\nsch\xf6n\n", encoding="latin-1")[0][2] == "schön"


def test_a_gzip_bomb_is_refused() -> None:
    bomb = gzip.compress(b"text\n" + b"a" * (30 * 1024 * 1024))
    with pytest.raises(UploadTooLargeError, match="expands more than 50x"):
        parse(bomb)


def test_too_many_rows_is_refused_while_streaming() -> None:
    limits = IngestLimits(10**8, 1000, 3, 50)
    reader = CsvReviews(io.BytesIO(b"text\na\nb\nc\nd\n"), limits)
    with pytest.raises(UploadTooLargeError, match="more than 3 rows"):
        list(reader)
