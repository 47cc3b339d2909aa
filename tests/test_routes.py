"""The HTTP API in-process (FastAPI's TestClient) on real SQLite and PostgreSQL, with the worker's
chunk task run in the same process on a stub scorer: the fast layer under the real-process
suites. What is checked is what a client sees: the job view, ids as sent, counts as rows."""

from __future__ import annotations

import csv
import gzip
import io
import json
import time
from collections.abc import Iterator
from datetime import datetime

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from tests import factories as f
from tests.inprocess import work_off

pytestmark = pytest.mark.usefixtures("database")


@pytest.fixture
def api(sent: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("REVIEWSCORE_CHUNK_SIZE", "4")
    from reviewscore.core.settings import get_settings

    get_settings.cache_clear()
    with TestClient(create_app()) as client:
        yield client
    get_settings.cache_clear()


def upload(api: TestClient, body: str, **params: str) -> dict:  # type: ignore[type-arg]
    response = api.post(
        "/v1/jobs", params=params, files={"file": ("reviews.csv", body.encode(), "text/csv")}
    )
    assert response.status_code == 202, response.text
    return response.json()  # type: ignore[no-any-return]


REVIEWS = "id,text\n" + "".join(f"r{i},review number {i} is fine\n" for i in range(1, 11))


def test_an_upload_is_a_job_that_finishes_once_its_chunks_are_scored(
    api: TestClient, sent: list[tuple[str, int]], stub_model: f.StubScorer
) -> None:
    job = upload(api, REVIEWS, id_column="id")
    assert (job["status"], job["finished"], job["received"], job["total"]) == (
        "queued",
        False,
        10,
        10,
    )
    assert [seq for _, seq in sent] == [0, 1, 2]
    assert job["created_at"].endswith("Z")
    work_off(sent)
    done = api.get(f"/v1/jobs/{job['id']}").json()
    assert (done["status"], done["finished"], done["scored"], done["failed"]) == (
        "succeeded",
        True,
        10,
        0,
    )
    assert datetime.fromisoformat(done["finished_at"]) >= datetime.fromisoformat(done["started_at"])
    results = list(csv.DictReader(io.StringIO(api.get(done["results_url"]).text)))
    assert [r["id"] for r in results] == [f"r{i}" for i in range(1, 11)]
    assert f.tally(job["id"]).consistent


def test_repeated_texts_are_scored_once_and_taken_from_the_cache(
    api: TestClient, sent: list[tuple[str, int]], stub_model: f.StubScorer
) -> None:
    first = upload(api, REVIEWS)
    work_off(sent)
    scored_before = sum(stub_model.calls)
    again = upload(api, REVIEWS)
    work_off(sent)
    assert sum(stub_model.calls) == scored_before, "every text came from the cache"
    assert api.get(f"/v1/jobs/{again['id']}").json()["scored"] == 10
    first_csv = api.get(f"/v1/jobs/{first['id']}/results").text
    assert api.get(f"/v1/jobs/{again['id']}/results").text == first_csv


def test_results_of_an_unfinished_job_are_409_unless_partial(api: TestClient) -> None:
    job = upload(api, REVIEWS)
    refused = api.get(f"/v1/jobs/{job['id']}/results")
    assert refused.status_code == 409 and "partial=true" in refused.json()["detail"]
    partial = api.get(f"/v1/jobs/{job['id']}/results", params={"partial": "true"})
    assert partial.status_code == 200 and partial.text.count("not scored yet") == 10


def test_cancel_is_final_at_once_and_a_cancelled_job_can_be_deleted(
    api: TestClient, sent: list[tuple[str, int]], stub_model: f.StubScorer
) -> None:
    job = upload(api, REVIEWS)
    cancelled = api.post(f"/v1/jobs/{job['id']}/cancel").json()
    assert (cancelled["status"], cancelled["finished"]) == ("cancelled", True)
    work_off(sent)
    assert api.get(f"/v1/jobs/{job['id']}").json()["scored"] == 0
    assert api.post(f"/v1/jobs/{job['id']}/cancel").status_code == 409
    assert api.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert api.get(f"/v1/jobs/{job['id']}").status_code == 404


def test_a_refused_file_leaves_no_job_behind(api: TestClient) -> None:
    response = api.post("/v1/jobs", files={"file": ("x.csv", b"title,body\na,b\n", "text/csv")})
    assert response.status_code == 422 and "'title', 'body'" in response.json()["detail"]
    assert api.get("/v1/jobs").json()["total"] == 0


def test_options_in_the_query_and_in_form_fields_before_the_file_are_both_used(
    api: TestClient,
) -> None:
    body = "review_id,comment\n7,nice film\n"
    by_query = upload(api, body, id_column="review_id", text_column="comment")
    by_form = api.post(
        "/v1/jobs",
        data={"id_column": "review_id", "text_column": "comment"},
        files={"file": ("x.csv", body.encode(), "text/csv")},
    ).json()
    for job in (by_query, by_form):
        assert (job["id_column"], job["text_column"], job["filename"]) == (
            "review_id",
            "comment",
            "x.csv" if job is by_form else "reviews.csv",
        )


def test_the_job_list_shows_the_newest_first_with_counts(
    api: TestClient, sent: list[tuple[str, int]], stub_model: f.StubScorer
) -> None:
    older = upload(api, REVIEWS)
    work_off(sent)
    newer = upload(api, REVIEWS)
    listing = api.get("/v1/jobs").json()
    assert [j["id"] for j in listing["jobs"]] == [newer["id"], older["id"]]
    assert [j["done"] for j in listing["jobs"]] == [0, 10]


# --- the files people have, and results they can join (issue 12) ----------------------------


def imdb_slice(n: int, seed: int) -> list[dict[str, str]]:
    from tests.conftest import sample_reviews

    return sample_reviews(n, seed=seed)


def as_delimited(rows: list[dict[str, str]], delimiter: str, encoding: str) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(
        out, ["id", "rating", "text"], delimiter=delimiter, extrasaction="ignore"
    )
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode(encoding, errors="replace")


def as_jsonl_gz(rows: list[dict[str, str]]) -> bytes:
    lines = "".join(json.dumps({"id": r["id"], "text": r["text"]}) + "\n" for r in rows)
    return gzip.compress(lines.encode())


def as_parquet(rows: list[dict[str, str]]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = io.BytesIO()
    table = pa.table({"id": [r["id"] for r in rows], "text": [r["text"] for r in rows]})
    pq.write_table(table, out, row_group_size=5)
    return out.getvalue()


DUMPS = {
    "semicolon-cp1252.csv": (lambda rows: as_delimited(rows, ";", "cp1252"), "csv", "windows-1252"),
    "tabs.tsv": (lambda rows: as_delimited(rows, "\t", "utf-8"), "tsv", "utf-8"),
    "reviews.jsonl.gz": (as_jsonl_gz, "jsonl", "utf-8"),
    "reviews.parquet": (as_parquet, "parquet", None),
}


def send(
    api: TestClient, name: str, data: bytes, ctype: str = "application/octet-stream", **params: str
) -> dict:  # type: ignore[type-arg]
    response = api.post("/v1/jobs", params=params, files={"file": (name, data, ctype)})
    assert response.status_code == 202, response.text
    return response.json()  # type: ignore[no-any-return]


def results_of(api: TestClient, job_id: str, **params: str) -> bytes:
    response = api.get(f"/v1/jobs/{job_id}/results", params=params)
    assert response.status_code == 200, response.text
    return response.content


def ids_in(api: TestClient, job_id: str, export: str) -> list[str]:
    """The ids of a job's results as a client reads them back from each export."""
    if export == "parquet":
        import pyarrow.parquet as pq

        return [
            str(i)
            for i in pq.read_table(io.BytesIO(results_of(api, job_id, format="parquet")))[
                "id"
            ].to_pylist()
        ]
    if export == "jsonl":
        lines = results_of(api, job_id, format="jsonl").decode().splitlines()
        return [json.loads(line)["id"] for line in lines]
    guard = "true" if export == "csv" else "false"
    body = results_of(api, job_id, format="csv", guard=guard).decode()
    return [r["id"] for r in csv.DictReader(io.StringIO(body))]


@pytest.mark.parametrize("name", list(DUMPS))
def test_a_real_dump_in_each_format_scores_with_no_option_and_keeps_its_ids(
    api: TestClient, sent: list[tuple[str, int]], stub_model: f.StubScorer, name: str
) -> None:
    build, expected_format, expected_encoding = DUMPS[name]
    rows = imdb_slice(13, seed=len(name))
    for row in rows:  # what a Windows spreadsheet adds: typographic quotes and accents
        row["text"] = row["text"].replace("'", "\u2019") + " Très réussi."
    job = send(api, name, build(rows))
    assert (job["format"], job["encoding"], job["id_column"]) == (
        expected_format,
        expected_encoding,
        "id",
    )
    work_off(sent)
    assert api.get(f"/v1/jobs/{job['id']}").json()["scored"] == 13
    for export in ("csv", "unguarded-csv", "jsonl", "parquet"):
        assert ids_in(api, job["id"], export) == [r["id"] for r in rows], export


NUMBERS = ["-1", "+44", "-3.5e2", "007", ".5", "1E3"]
FORMULAS = ["@x", "=1+1", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A9)"]


def test_numeric_ids_come_back_unchanged_in_every_format(
    api: TestClient, sent: list[tuple[str, int]], stub_model: f.StubScorer
) -> None:
    body = "id,text\n" + "".join(f"{i},review {n}\n" for n, i in enumerate(NUMBERS))
    job = upload(api, body)
    work_off(sent)
    for export in ("csv", "unguarded-csv", "jsonl", "parquet"):
        assert ids_in(api, job["id"], export) == NUMBERS, export


def test_formula_cells_are_kept_in_faithful_exports_and_neutralised_in_the_guarded_csv(
    api: TestClient, sent: list[tuple[str, int]], stub_model: f.StubScorer
) -> None:
    rows = [[i, f"review {n}", f'=HYPERLINK("x","{n}")'] for n, i in enumerate(FORMULAS)]
    out = io.StringIO()
    csv.writer(out).writerows([["id", "text", "title"], *rows])
    job = upload(api, out.getvalue(), keep_columns="title")
    work_off(sent)
    for export in ("unguarded-csv", "jsonl", "parquet"):
        assert ids_in(api, job["id"], export) == FORMULAS, export
    guarded = list(csv.DictReader(io.StringIO(results_of(api, job["id"]).decode())))
    assert [r["id"] for r in guarded] == ["'" + i for i in FORMULAS]
    assert {r["title"][:2] for r in guarded} == {"'="}


def test_kept_columns_come_back_next_to_the_scores_in_every_format(
    api: TestClient, sent: list[tuple[str, int]], stub_model: f.StubScorer
) -> None:
    body = "id,text,Title,label\n1,good film,Heat,1\n2,bad film,Cats,0\n"
    job = upload(api, body, keep_columns="title, label")
    assert job["keep_columns"] == ["Title", "label"]
    work_off(sent)
    lines = [
        json.loads(x) for x in results_of(api, job["id"], format="jsonl").decode().splitlines()
    ]
    assert [(x["id"], x["Title"], x["input_label"]) for x in lines] == [
        ("1", "Heat", "1"),
        ("2", "Cats", "0"),
    ]
    assert {x["label"] for x in lines} <= {"positive", "negative"}
    header = results_of(api, job["id"]).decode().splitlines()[0]
    assert header == "id,p_positive,label,model_version,truncated,error,Title,input_label"
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(results_of(api, job["id"], format="parquet")))
    assert table["Title"].to_pylist() == ["Heat", "Cats"]


def test_a_finished_job_shows_its_summary_and_lists_stay_without_it(
    api: TestClient, sent: list[tuple[str, int]], stub_model: f.StubScorer
) -> None:
    # The stub scores a text (len % 10) / 10 in float32: "x" * k gives k / 10 (lengths whose
    # float32 score is not just under a bin edge).
    texts = ["x" * k for k in (1, 2, 2, 6, 8, 5)] + ["  ", "y" * 100_001]
    job = upload(api, "text\n" + "".join(f"{t}\n" for t in texts))
    early = api.get(f"/v1/jobs/{job['id']}/summary").json()
    assert (early["final"], early["scored"], early["not_scored_yet"]) == (False, 0, 8)
    assert api.get(f"/v1/jobs/{job['id']}").json()["summary"] is None
    work_off(sent)
    summary = api.get(f"/v1/jobs/{job['id']}").json()["summary"]
    assert summary["final"] and (summary["rows"], summary["scored"], summary["failed"]) == (8, 6, 2)
    assert summary["labels"] == {"positive": 3, "negative": 3}
    assert summary["share_positive"] == 0.5
    assert summary["histogram"]["counts"] == [0, 1, 2, 0, 0, 1, 1, 0, 1, 0]
    assert len(summary["histogram"]["edges"]) == 11
    assert summary["failed_by_reason"] == {
        "empty text": 1,
        "text is N bytes, over the limit of N": 1,
    }
    assert api.get("/v1/jobs").json()["jobs"][0]["summary"] is None


def multipart(parts: list[tuple[str, bytes, str | None]]) -> tuple[bytes, dict[str, str]]:
    """A form with its parts in the order given (httpx puts fields before files)."""
    body = b""
    for name, value, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--rsb\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"
    return body + b"--rsb--\r\n", {"Content-Type": "multipart/form-data; boundary=rsb"}


def test_an_option_after_the_file_is_refused_and_leaves_no_job(
    api: TestClient, sent: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from reviewscore.core.settings import get_settings

    small = b"review_id,id,text\n1,a,good\n"
    # Over the part read before anything is stored: its job exists when the option turns up.
    big = b"review_id,id,text\n" + b"".join(
        b"%d,a%d,%s\n" % (i, i, b"word " * 200) for i in range(1200)
    )
    monkeypatch.setenv("REVIEWSCORE_CHUNK_SIZE", "500")
    get_settings.cache_clear()
    for data in (small, big):
        body, headers = multipart([("file", data, "r.csv"), ("id_column", b"review_id", None)])
        response = api.post("/v1/jobs", content=body, headers=headers)
        assert response.status_code == 400, response.text
        message = response.json()["detail"]
        assert "'id_column' came after the file" in message and "before the file" in message
        assert api.get("/v1/jobs").json()["total"] == 0
    assert sent, "the big file's rows were stored and queued before the option came"
    before = multipart([("id_column", b"review_id", None), ("file", small, "r.csv")])
    assert (
        api.post("/v1/jobs", content=before[0], headers=before[1]).json()["id_column"]
        == "review_id"
    )


def test_an_unknown_form_field_is_refused(api: TestClient) -> None:
    body, headers = multipart([("id_colum", b"x", None), ("file", b"text\nok\n", "r.csv")])
    response = api.post("/v1/jobs", content=body, headers=headers)
    assert (
        response.status_code == 400 and "unknown form field 'id_colum'" in response.json()["detail"]
    )


def test_a_part_header_of_a_megabyte_is_refused_at_once_naming_the_limit(api: TestClient) -> None:
    body, headers = multipart([("file", b"text\nok\n", "r.csv")])
    padded = body.replace(b"\r\n\r\n", b"\r\nX-Pad: " + b"a" * 1_000_000 + b"\r\n\r\n", 1)
    started = time.monotonic()
    response = api.post("/v1/jobs", content=padded, headers=headers)
    assert response.status_code == 413, response.text
    assert "16,384 bytes" in response.json()["detail"], response.text
    assert time.monotonic() - started < 5
    assert api.get("/v1/jobs").json()["total"] == 0


def test_a_header_line_sent_in_small_pieces_is_refused_once_past_the_limit() -> None:
    from api.multipart import MAX_PART_HEADER_BYTES, MultipartFileReader
    from reviewscore.core.errors import UploadTooLargeError

    body = multipart([("file", b"text\nok\n", "r.csv")])[0]
    body = body.replace(b"\r\n\r\n", b"\r\nX-Pad: " + b"a" * 1_000_000 + b"\r\n\r\n", 1)
    pieces = iter(body[i : i + 100] for i in range(0, len(body), 100))
    pulled: list[int] = []

    def pull() -> bytes:
        pulled.append(1)
        return next(pieces, b"")

    with pytest.raises(UploadTooLargeError):
        MultipartFileReader(pull, b"rsb").wait_for_file()
    assert len(pulled) * 100 <= MAX_PART_HEADER_BYTES + 200


def test_more_than_32_fields_before_the_file_are_refused(api: TestClient) -> None:
    many = [("format", b"csv", None)] * 1000 + [("file", b"text\nok\n", "r.csv")]
    response = api.post("/v1/jobs", content=multipart(many)[0], headers=multipart(many)[1])
    assert response.status_code == 400, response.text
    assert "32 form fields" in response.json()["detail"], response.text
    assert api.get("/v1/jobs").json()["total"] == 0
    at_the_limit = [("format", b"csv", None)] * 32 + [("file", b"text\nok\n", "r.csv")]
    body, headers = multipart(at_the_limit)
    assert api.post("/v1/jobs", content=body, headers=headers).status_code == 202


def test_a_form_field_over_64_kib_is_refused_naming_the_limit(api: TestClient) -> None:
    parts = [("text_column", b"t" * 100_000, None), ("file", b"text\nok\n", "r.csv")]
    body, headers = multipart(parts)
    response = api.post("/v1/jobs", content=body, headers=headers)
    assert response.status_code == 413, response.text
    assert "'text_column'" in response.json()["detail"], response.text
    assert "65,536 bytes" in response.json()["detail"], response.text


def test_a_text_column_named_twice_is_422_naming_both(api: TestClient) -> None:
    response = api.post("/v1/jobs", files={"file": ("x.csv", b"id,text,text\n1,a,b\n", "text/csv")})
    assert response.status_code == 422
    assert "('text', 'text' at columns 2 and 3)" in response.json()["detail"]


@pytest.mark.parametrize(
    ("name", "data", "words"),
    [
        (
            "r.xlsx",
            b"PK\x03\x04" + bytes(26) + b"xl/workbook.xml" + bytes(200),
            "Excel workbook (.xlsx)",
        ),
        (
            "r.json",
            json.dumps([{"id": i, "text": "x" * 50} for i in range(100)]).encode(),
            "JSON array",
        ),
        ("r.csv", (",".join(f"col{i}" for i in range(3000)) + "\n").encode(), "and 2,988 more"),
    ],
)
def test_a_refused_file_leaves_no_job_and_a_short_message(
    api: TestClient, name: str, data: bytes, words: str
) -> None:
    response = api.post("/v1/jobs", files={"file": (name, data, "application/octet-stream")})
    assert response.status_code == 422 and words in response.json()["detail"]
    assert len(response.json()["detail"]) < 600
    assert api.get("/v1/jobs").json()["total"] == 0


def test_a_raw_body_of_each_type_is_an_upload_and_json_points_at_score(api: TestClient) -> None:
    ok = api.post(
        "/v1/jobs",
        params={"filename": "r.jsonl"},
        content=b'{"id": "a", "text": "good"}\n',
        headers={"Content-Type": "application/x-ndjson"},
    )
    assert ok.status_code == 202 and (ok.json()["format"], ok.json()["filename"]) == (
        "jsonl",
        "r.jsonl",
    )
    refused = api.post("/v1/jobs", json={"text": "hello"})
    assert refused.status_code == 415 and "POST /v1/score" in refused.json()["detail"]


def test_a_preview_reads_the_first_mib_and_stores_nothing(api: TestClient) -> None:
    rows = imdb_slice(2000, seed=9)
    for row in rows:
        row["text"] = row["text"] + " Très réussi."
    whole = as_delimited(rows, ";", "cp1252")
    cut = whole[: 1024 * 1024]  # what the page sends: the file's first MiB, its last row torn
    response = api.post("/v1/jobs/upload/preview", files={"file": ("r.csv", cut, "text/csv")})
    assert response.status_code == 200, response.text
    found = response.json()
    assert (found["format"], found["encoding"], found["delimiter"]) == ("csv", "windows-1252", ";")
    assert (found["columns"], found["text_column"], found["id_column"]) == (
        ["id", "rating", "text"],
        "text",
        "id",
    )
    assert [r["id"] for r in found["rows"]] == [r["id"] for r in rows[:5]]
    assert found["error"] is None
    nested = b'{"meta": {"uid": "a"}, "review": {"text": "fine"}}\n'
    found = api.post(
        "/v1/jobs/upload/preview", content=nested, headers={"Content-Type": "application/x-ndjson"}
    ).json()
    assert (found["format"], found["columns"], found["text_column"]) == (
        "jsonl",
        ["meta", "review"],
        "review.text",
    )
    refused = api.post(
        "/v1/jobs/upload/preview",
        files={"file": ("r.xlsx", b"PK\x03\x04" + bytes(26) + b"xl/", "application/octet-stream")},
    )
    assert refused.status_code == 422 and "Excel workbook" in refused.json()["detail"]
    assert api.get("/v1/jobs").json()["total"] == 0


def test_each_operation_is_listed_under_exactly_one_tag_in_the_openapi_page(
    api: TestClient,
) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    tags = {
        (method.upper(), path): operation.get("tags", [])
        for path, operations in paths.items()
        for method, operation in operations.items()
    }
    assert {op: t for op, t in tags.items() if len(t) != 1} == {}
