"""The formats people have, read by ingest on real IMDB reviews: the CSV separator and text
encoding detected, TSV, JSON Lines (nested fields, numbers as ids), Parquet (row groups, typed
ids), and files that are not data refused with the fix in one sentence."""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
import zipfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reviewscore.core.errors import BadUploadError
from reviewscore.core.ingest import IngestLimits, Reviews, UploadOptions, open_reviews
from reviewscore.core.ingest.detect import detect_delimiter
from tests.conftest import read_imdb

LIMITS = IngestLimits(10**9, 100_000, 100_000, 200)


@pytest.fixture(scope="module")
def imdb() -> list[dict[str, str]]:
    return read_imdb("test")


def sample(imdb: list[dict[str, str]], n: int, seed: int) -> list[dict[str, str]]:
    return random.Random(seed).sample(imdb, n)


def read(data: bytes, limits: IngestLimits = LIMITS, **options: Any) -> Reviews:
    return open_reviews(io.BytesIO(data), limits, UploadOptions(**options))


def delimited(rows: list[dict[str, str]], columns: list[str], delimiter: str = ",") -> str:
    out = io.StringIO()
    writer = csv.DictWriter(
        out, columns, delimiter=delimiter, lineterminator="\r\n", extrasaction="ignore"
    )
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def ids_and_texts(reader: Reviews) -> list[tuple[str | None, str]]:
    return [(r.ext_id, r.text) for r in reader]


# --- CSV: separator and encoding ----------------------------------------------------------


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_the_separator_is_detected_on_real_reviews(
    imdb: list[dict[str, str]], delimiter: str
) -> None:
    # csv.Sniffer picked the wrong separator for 15-45 % of such samples (measured: 242 of
    # 800); the header-and-consistency rule used here got all 800 right.
    for seed in range(20):
        rows = sample(imdb, 30, seed)
        columns = random.Random(seed).choice([["id", "text", "label"], ["text", "rating"]])
        text = delimited(rows, columns, delimiter)
        assert detect_delimiter(text) == delimiter, (seed, columns)


def test_a_semicolon_windows_1252_csv_reads_with_no_option(imdb: list[dict[str, str]]) -> None:
    rows = sample(imdb, 40, seed=3)
    for row in rows:  # the typographic quotes and accents a Windows spreadsheet writes
        row["text"] = row["text"].replace("'", "\u2019") + " Très réussi, «bravo»."
    data = delimited(rows, ["id", "rating", "text"], ";").encode("cp1252", errors="replace")
    reader = read(data)
    assert (reader.format, reader.delimiter, reader.encoding) == ("csv", ";", "windows-1252")
    assert reader.id_column == "id"
    got = ids_and_texts(reader)
    expected = [(r["id"], r["text"].encode("cp1252", "replace").decode("cp1252")) for r in rows]
    assert got == expected


def test_utf16_is_read_with_or_without_a_bom(imdb: list[dict[str, str]]) -> None:
    rows = sample(imdb, 5, seed=4)
    text = delimited(rows, ["id", "text"], "\t")
    for encoding, name in (("utf-16", "utf-16"), ("utf-16-le", "utf-16-le")):
        reader = read(text.encode(encoding))
        assert (reader.encoding, reader.delimiter) == (name, "\t")
        assert ids_and_texts(reader) == [(r["id"], r["text"]) for r in rows]


def test_an_encoding_or_delimiter_given_wins_over_detection() -> None:
    data = "id|text\n1|Très bien; vraiment\n".encode("latin-1")
    reader = read(data, encoding="latin-1", delimiter="pipe")
    assert (reader.encoding, reader.delimiter) == ("iso8859-1", "|")
    assert ids_and_texts(reader) == [("1", "Très bien; vraiment")]
    with pytest.raises(BadUploadError, match="delimiter 'ab' is not one character"):
        read(data, delimiter="ab")


def test_old_mac_line_ends_are_read() -> None:
    assert ids_and_texts(read(b"id,text\r1,good\r2,bad\r")) == [("1", "good"), ("2", "bad")]


def test_a_tsv_is_read_by_its_name_or_its_type(imdb: list[dict[str, str]]) -> None:
    rows = sample(imdb, 10, seed=5)
    data = delimited(rows, ["id", "text"], "\t").encode()
    for options in ({"filename": "r.tsv"}, {"content_type": "text/tab-separated-values"}, {}):
        reader = read(data, **options)
        assert (reader.format, reader.delimiter) == ("tsv", "\t")
        assert ids_and_texts(reader) == [(r["id"], r["text"]) for r in rows]


# --- JSON Lines -------------------------------------------------------------------------------


def jsonl(objects: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objects).encode()


def test_jsonl_gz_reads_with_no_option(imdb: list[dict[str, str]]) -> None:
    rows = sample(imdb, 20, seed=6)
    data = gzip.compress(jsonl([{"review_id": r["id"], "text": r["text"]} for r in rows]))
    reader = read(data, filename="reviews.jsonl.gz")
    assert (reader.format, reader.id_column, reader.text_column) == ("jsonl", "review_id", "text")
    assert ids_and_texts(reader) == [(r["id"], r["text"]) for r in rows]


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzipped"])
def test_jsonl_over_the_record_cap_in_total_is_read_whole(
    imdb: list[dict[str, str]], compress: bool
) -> None:
    # The record cap (1 MiB here) bounds one line; ~2.7 KB lines adding up to > 2 MiB must all
    # be read, not refused at the line that crosses byte 1,048,576 of the file.
    rows = [
        {"review_id": str(i), "text": (r["text"] * 3)[:2700]}
        for i, r in enumerate(sample(imdb, 900, seed=7))
    ]
    data = jsonl(rows)
    assert len(data) > 2 * 1024 * 1024
    reader = read(gzip.compress(data) if compress else data)
    parsed = list(reader)
    assert [r.error for r in parsed if r.error] == []
    assert len(parsed) == len(rows)


def test_jsonl_numbers_as_ids_keep_their_exact_characters() -> None:
    data = b'{"id": -1, "text": "a"}\n{"id": 1.50, "text": "b"}\n{"id": "+44", "text": "c"}\n'
    assert [r.ext_id for r in read(data)] == ["-1", "1.50", "+44"]


def test_jsonl_nested_fields_by_dotted_path() -> None:
    objects = [
        {"meta": {"uid": f"u{i}"}, "review": {"text": f"text {i}", "stars": i}} for i in range(3)
    ]
    auto = read(jsonl(objects))
    assert auto.text_column == "review.text" and auto.id_column is None
    named = read(jsonl(objects), id_column="meta.uid", keep_columns=("review.stars",))
    assert [(r.ext_id, r.text, r.extra) for r in named] == [
        (f"u{i}", f"text {i}", {"review.stars": i}) for i in range(3)
    ]


def test_jsonl_lines_that_are_not_objects_fail_alone() -> None:
    data = b'{"id": "a", "text": "good"}\n\n[1, 2]\n{"id": "b", "text": 5}\nnot json\n{"id": "c"}\n'
    rows = [(r.row_num, r.ext_id, r.error) for r in read(data)]
    assert rows == [
        (1, "a", None),
        (2, None, "line is an array, not a JSON object"),
        (3, "b", "'text' is a number, not a string"),
        (4, None, rows[3][2]),
        (5, "c", "no 'text' field"),
    ]
    assert str(rows[3][2]).startswith("line is not valid JSON")


@pytest.mark.parametrize(
    ("data", "filename", "words"),
    [
        (b'[{"id": 1, "text": "a"}]', "r.json", "this is a JSON array, not JSON Lines"),
        (b'{\n  "id": 1,\n  "text": "a"\n}\n', "r.json", "a pretty-printed JSON file?"),
        (b'"just a string"\n', "r.jsonl", "the first line is a string, not a JSON object"),
        (b'{"id": 1}\n', "r.jsonl", "no text column"),
    ],
)
def test_json_that_is_not_json_lines_is_refused_with_the_fix(
    data: bytes, filename: str, words: str
) -> None:
    with pytest.raises(BadUploadError, match=words.replace("?", r"\?")):
        read(data, filename=filename)


# --- Parquet ----------------------------------------------------------------------------------


def parquet(table: pa.Table, row_group_size: int) -> bytes:
    out = io.BytesIO()
    pq.write_table(table, out, row_group_size=row_group_size)
    return out.getvalue()


def test_parquet_reads_row_group_by_row_group_with_no_option(
    imdb: list[dict[str, str]], tmp_path: Path
) -> None:
    rows = sample(imdb, 600, seed=7)
    table = pa.table(
        {
            "review_id": [-i for i in range(600)],
            "text": [r["text"] for r in rows],
            "label": [int(r["label"]) for r in rows],
        }
    )
    data = parquet(table, row_group_size=128)
    limits = IngestLimits(10**9, 100_000, 100_000, 200, spool_dir=tmp_path)
    reader = read(data, limits, keep_columns=("label",))
    assert (reader.format, reader.id_column) == ("parquet", "review_id")
    got = list(reader)
    assert [(r.ext_id, r.text) for r in got] == [(str(-i), r["text"]) for i, r in enumerate(rows)]
    assert [r.extra for r in got[:2]] == [
        {"label": int(rows[0]["label"])},
        {"label": int(rows[1]["label"])},
    ]
    assert list(tmp_path.iterdir()) == [], "the spooled upload is removed once read"


def test_a_parquet_text_column_that_is_not_text_is_refused(tmp_path: Path) -> None:
    data = parquet(pa.table({"text": [1, 2]}), 10)
    with pytest.raises(BadUploadError, match="column 'text' holds int64, not text"):
        read(data, IngestLimits(10**9, 1000, 1000, 200, spool_dir=tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_a_cut_off_parquet_file_is_refused() -> None:
    data = parquet(pa.table({"text": ["a", "b"]}), 10)
    with pytest.raises(BadUploadError, match="the Parquet file cannot be read"):
        read(data[: len(data) // 2])


# --- files that are not data --------------------------------------------------------------------


def xlsx() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("_rels/.rels", "<Relationships/>")
        z.writestr("xl/workbook.xml", "<workbook/>")
    return out.getvalue()


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (
            xlsx(),
            "this looks like an Excel workbook (.xlsx), not a file of reviews: save it as CSV",
        ),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(100), "Excel 97-2003 workbook (.xls)"),
        (b"PK\x03\x04" + bytes(60), "a ZIP archive, not a file of reviews: unzip it"),
        (b"%PDF-1.7\n", "a PDF document"),
        (b"BZh91AY&SY", "a bzip2 archive, not a file of reviews: decompress it"),
        (b"\x00\x01\x02\x03" + bytes(range(256)), "this is not a text file"),
    ],
)
def test_files_that_are_not_data_are_refused_with_the_fix(data: bytes, words: str) -> None:
    with pytest.raises(BadUploadError) as refused:
        read(data)
    assert words in str(refused.value)


@pytest.mark.parametrize(
    ("data", "options", "words"),
    [
        (b"text\nfine\n", {"format": "parquet"}, "format=parquet, but the file is not Parquet"),
        (b"text\nfine\n", {"format": "xlsx"}, "unknown format 'xlsx'"),
        (b"text\nfine\n", {"filename": "r.parquet"}, "is named or typed as Parquet but is not"),
    ],
)
def test_a_format_that_does_not_fit_the_content_is_named(
    data: bytes, options: dict[str, str], words: str
) -> None:
    with pytest.raises(BadUploadError, match=words):
        read(data, **options)


def test_content_decides_over_a_misleading_name() -> None:
    assert read(b'{"text": "fine"}\n', filename="reviews.csv").format == "jsonl"
    assert read(parquet(pa.table({"text": ["x"]}), 10), filename="r.csv").format == "parquet"


def test_kept_values_are_stored_as_json_can_hold_them(tmp_path: Path) -> None:
    table = pa.table({"text": ["a", "b"], "score": [float("nan"), 1.5], "note": ["x\x00y", None]})
    reader = read(parquet(table, 10), keep_columns=("score", "note"))
    assert [r.extra for r in reader] == [
        {"score": "nan", "note": "xy"},
        {"score": 1.5, "note": None},
    ]
    too_big = read(
        b"text,note\nfine," + b"n" * 1500 + b"\n",
        IngestLimits(10**9, 1000, 10, 50),
        keep_columns=("note",),
    )
    assert [(r.text, r.error, r.extra) for r in too_big] == [
        ("fine", "the kept columns hold 1,500 characters, over the limit of 1,000", None)
    ]
