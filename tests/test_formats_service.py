"""Real dumps in, joinable results out, end to end on the real stack (API, Redis, Celery worker
with the real model, SQLite and PostgreSQL): each format with no option, ids exactly as sent in
every export, kept columns, the summary, and options after the file refused."""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import RunningStack, sample_reviews

ROWS = 150


def delimited(rows: list[dict[str, str]], delimiter: str, encoding: str) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(
        out, ["id", "rating", "label", "text"], delimiter=delimiter, lineterminator="\r\n"
    )
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode(encoding, errors="replace")


def jsonl_gz(rows: list[dict[str, str]]) -> bytes:
    return gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode())


def parquet(rows: list[dict[str, str]]) -> bytes:
    out = io.BytesIO()
    columns = {name: [r[name] for r in rows] for name in ("id", "label", "text")}
    pq.write_table(pa.table(columns), out, row_group_size=40)
    return out.getvalue()


FORMATS: dict[str, tuple[Callable[[list[dict[str, str]]], bytes], str]] = {
    "semicolons-windows-1252.csv": (lambda r: delimited(r, ";", "cp1252"), "csv"),
    "reviews.tsv": (lambda r: delimited(r, "\t", "utf-8"), "tsv"),
    "reviews.jsonl.gz": (jsonl_gz, "jsonl"),
    "reviews.parquet": (parquet, "parquet"),
}


def post(service: RunningStack, name: str, data: bytes, **params: str) -> dict[str, Any]:
    with service.http() as http:
        response = http.post(
            "/v1/jobs",
            params=params,
            files={"file": (name, data, "application/octet-stream")},
        )
    assert response.status_code == 202, response.text
    return service.wait_job(response.json()["id"], timeout=300)


def download(service: RunningStack, job_id: str, export: str) -> list[dict[str, Any]]:
    """The results as a client reads them from each export."""
    fmt, guard = {"csv": ("csv", "true"), "raw-csv": ("csv", "false")}.get(export, (export, ""))
    with service.http() as http:
        response = http.get(
            f"/v1/jobs/{job_id}/results",
            params={"format": fmt, **({"guard": guard} if guard else {})},
        )
    assert response.status_code == 200, response.text
    if fmt == "parquet":
        return pq.read_table(io.BytesIO(response.content)).to_pylist()  # type: ignore[no-any-return]
    if fmt == "jsonl":
        return [json.loads(line) for line in response.text.splitlines()]
    return list(csv.DictReader(io.StringIO(response.text)))


EXPORTS = ("csv", "raw-csv", "jsonl", "parquet")


@pytest.mark.parametrize("name", list(FORMATS))
def test_each_format_scores_with_no_option_and_ids_come_back_as_sent(
    service: RunningStack, name: str
) -> None:
    build, expected = FORMATS[name]
    rows = sample_reviews(ROWS, seed=21)
    for row in rows:  # what a Windows spreadsheet adds: typographic quotes and accents
        row["text"] = row["text"].replace("'", "\u2019") + " Très réussi."
    job = post(service, name, build(rows), keep_columns="label")
    assert (job["status"], job["format"], job["id_column"]) == ("succeeded", expected, "id")
    assert (job["scored"], job["failed"]) == (ROWS, 0)
    for export in EXPORTS:
        got = download(service, job["id"], export)
        assert [r["id"] for r in got] == [r["id"] for r in rows], export
    # The kept true label beside the predicted one: the real model agrees on most reviews.
    scored = download(service, job["id"], "jsonl")
    agree = sum((r["label"] == "positive") == (str(r["input_label"]) == "1") for r in scored)
    assert agree / ROWS > 0.8
    summary = job_summary(service, job["id"])
    assert summary["final"] and sum(summary["labels"].values()) == ROWS


def job_summary(service: RunningStack, job_id: str) -> dict[str, Any]:
    with service.http() as http:
        return http.get(f"/v1/jobs/{job_id}").json()["summary"]  # type: ignore[no-any-return]


def test_numbers_and_formulas_as_ids_through_every_export(service: RunningStack) -> None:
    numbers = ["-1", "+44", "-3.5e2", "007"]
    formulas = ["@x", "=1+1", "+cmd|' /C calc'!A0"]
    texts = [r["text"] for r in sample_reviews(len(numbers + formulas), seed=22)]
    out = io.StringIO()
    csv.writer(out).writerows([["id", "text"], *zip(numbers + formulas, texts, strict=True)])
    job = post(service, "ids.csv", out.getvalue().encode())
    for export in ("raw-csv", "jsonl", "parquet"):
        got = [r["id"] for r in download(service, job["id"], export)]
        assert got == numbers + formulas, export
    guarded = [r["id"] for r in download(service, job["id"], "csv")]
    assert guarded == numbers + ["'" + f for f in formulas]


def test_an_option_after_the_file_is_refused_and_leaves_no_job(service: RunningStack) -> None:
    # What `curl -F file=@reviews.csv -F id_column=review_id` sends: the file part first.
    body = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="r.csv"\r\n\r\n'
        b"review_id,text\r\n7,A fine film.\r\n"
        b'\r\n--b\r\nContent-Disposition: form-data; name="id_column"\r\n\r\nreview_id\r\n--b--\r\n'
    )
    before = service.client.jobs(limit=1)["total"]
    with service.http() as http:
        response = http.post(
            "/v1/jobs", content=body, headers={"Content-Type": "multipart/form-data; boundary=b"}
        )
    assert response.status_code == 400, response.text
    assert "'id_column' came after the file" in response.json()["detail"]
    assert service.client.jobs(limit=1)["total"] == before
