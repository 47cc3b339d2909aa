"""Cutting a file into parts at record boundaries (reviewscore/splitting.py), as the client does
for an upload in parts: every record once, in order, none torn; the same bytes every time."""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path

import pytest

from reviewscore import splitting


def tricky_rows(n: int) -> list[list[str]]:
    """Texts with quoted line breaks, commas and doubled quotes: where a byte-wise cut tears."""
    return [
        [f"id-{i}", f'Line one of {i},\nline "two" of it\r\nand, at last, three ({i}).']
        for i in range(n)
    ]


def write_csv(path: Path, rows: list[list[str]], *, gz: bool = False) -> Path:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "text"])
    writer.writerows(rows)
    data = out.getvalue().encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def records_of(parts: list[bytes], gz: bool = False) -> list[list[str]]:
    found: list[list[str]] = []
    for part in parts:
        text = (gzip.decompress(part) if gz else part).decode()
        rows = list(csv.reader(io.StringIO(text, newline="")))
        assert rows[0] == ["id", "text"], "every part begins with the header row"
        found.extend(rows[1:])
    return found


def test_a_csv_is_cut_between_records_never_inside_quotes(tmp_path: Path) -> None:
    rows = tricky_rows(2000)
    path = write_csv(tmp_path / "reviews.csv", rows)
    parts = list(splitting.split(path, part_bytes=10_000))
    assert len(parts) > 10
    assert records_of(parts) == rows
    assert parts == list(splitting.split(path, part_bytes=10_000)), "the same bytes every time"


def test_a_gzipped_file_is_read_as_a_stream_and_its_parts_are_gzipped(tmp_path: Path) -> None:
    rows = tricky_rows(500)
    path = write_csv(tmp_path / "reviews.csv.gz", rows, gz=True)
    parts = list(splitting.split(path, part_bytes=8_000))
    assert len(parts) > 3 and all(p[:2] == b"\x1f\x8b" for p in parts)
    assert records_of(parts, gz=True) == rows
    assert parts == list(splitting.split(path, part_bytes=8_000))


def test_a_part_holds_at_most_the_record_cap(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "short.csv", [[str(i), "ok"] for i in range(250)])
    parts = list(splitting.split(path, max_records=100))
    assert [len(records_of([p])) for p in parts] == [100, 100, 50]


def test_json_lines_are_cut_between_lines(tmp_path: Path) -> None:
    lines = [json.dumps({"id": i, "text": f"review {i}\nwith a break"}) for i in range(300)]
    path = tmp_path / "reviews.jsonl"
    path.write_text("\n".join(lines) + "\n")
    parts = list(splitting.split(path, part_bytes=2_000))
    assert len(parts) > 5
    assert [line for p in parts for line in p.decode().splitlines()] == lines


def test_parquet_is_cut_by_row_groups_each_part_a_parquet_file(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table({"id": list(range(1000)), "text": [f"review {i}" for i in range(1000)]})
    path = tmp_path / "reviews.parquet"
    pq.write_table(table, path, row_group_size=100)
    parts = list(splitting.split(path, part_bytes=1))  # one row group a part
    assert len(parts) == 10 and all(p[:4] == b"PAR1" for p in parts)
    back = [pq.read_table(io.BytesIO(p)).column("id").to_pylist() for p in parts]
    assert [i for ids in back for i in ids] == list(range(1000))


def test_utf16_is_not_cut_by_bytes(tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    path.write_bytes("id,text\n1,fine\n".encode("utf-16"))
    with pytest.raises(splitting.NotSplittableError, match="UTF-16"):
        list(splitting.split(path))
    assert not splitting.can_split(path)
