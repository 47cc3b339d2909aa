"""Bad input through real HTTP: never a 500; what cannot be accepted is a 4xx naming the problem,
what can be accepted is scored, and bad rows get their own errors while the rest is scored."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import RunningStack, sample_reviews, sqlite_stack, stored_texts, wait_for

# Most cases run on SQLite only: the ingest and HTTP paths are the same on both backends. The
# ones whose data lands differently in each database (NULs, Unicode, line breaks) run on both.
SQLITE = pytest.mark.parametrize("service", ["sqlite"], indirect=True)

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"


def upload(
    service: RunningStack,
    data: bytes,
    *,
    filename: str = "reviews.csv",
    ctype: str = "text/csv",
    **params: str,
) -> httpx.Response:
    with service.http() as http:
        return http.post("/v1/jobs", files={"file": (filename, data, ctype)}, params=params)


def upload_ok(service: RunningStack, data: bytes, **kwargs: Any) -> dict[str, Any]:
    response = upload(service, data, **kwargs)
    assert response.status_code == 202, response.text
    return service.wait_job(response.json()["id"], timeout=120)


def results(service: RunningStack, job_id: str, **params: str) -> list[dict[str, str]]:
    with service.http() as http:
        response = http.get(f"/v1/jobs/{job_id}/results", params=params)
    assert response.status_code == 200, response.text
    return list(csv.DictReader(io.StringIO(response.text)))


def detail(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body["detail"], str | list)
    return str(body["detail"])


def csv_bytes(rows: list[list[str]], lineterminator: str = "\n") -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator=lineterminator).writerows(rows)
    return out.getvalue().encode("utf-8")


@pytest.fixture(scope="module")
def small_limits(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path
) -> Iterator[RunningStack]:
    """A second stack with tiny limits, for the 413 answers."""
    limits = {"REVIEWSCORE_MAX_UPLOAD_BYTES": "20000", "REVIEWSCORE_MAX_ROWS_PER_JOB": "50"}
    with sqlite_stack(tmp_path_factory.mktemp("var-small"), models_dir, limits) as running:
        yield running


# --- files that are not CSV at all ------------------------------------------------------


@SQLITE
def test_empty_body_is_refused(service: RunningStack) -> None:
    with service.http() as http:
        raw = http.post("/v1/jobs", content=b"", headers={"Content-Type": "text/csv"})
    assert "empty" in detail(raw, 422)
    assert "empty" in detail(upload(service, b""), 422)


@SQLITE
def test_a_file_of_blank_lines_is_empty(service: RunningStack) -> None:
    assert "empty" in detail(upload(service, b"\n\n  \n\r\n"), 422)


@SQLITE
def test_a_png_image_is_not_a_csv(service: RunningStack) -> None:
    assert "PNG image" in detail(upload(service, PNG, filename="cat.png", ctype="image/png"), 422)


@SQLITE
def test_an_xlsx_spreadsheet_is_not_a_csv(service: RunningStack) -> None:
    body = b"PK\x03\x04\x14\x00\x06\x00" + bytes(range(256)) * 4
    assert "ZIP archive" in detail(upload(service, body, filename="r.xlsx"), 422)


@SQLITE
def test_random_binary_is_not_a_csv(service: RunningStack) -> None:
    with_nul = b"\x00\x01\x02\x03" + bytes(range(256))
    assert "binary data" in detail(upload(service, with_nul, filename="r.bin"), 422)
    # Without NULs it decodes as some 8-bit text; what it holds is no header we can use, and the
    # message stays short however long the garbage "columns" are.
    without_nul = bytes((i * 131 + 7) % 256 for i in range(4096))
    jobs_before = service.client.jobs(limit=1)["total"]
    message = detail(upload(service, without_nul, filename="r.bin"), 422)
    assert len(message) < 800, message
    assert service.client.jobs(limit=1)["total"] == jobs_before, "a refused file leaves no job"


@SQLITE
def test_header_only_has_no_data_rows(service: RunningStack) -> None:
    assert "no data rows" in detail(upload(service, b"id,text\n"), 422)


# --- columns -------------------------------------------------------------------------------


@SQLITE
def test_missing_text_column_lists_the_columns(service: RunningStack) -> None:
    message = detail(upload(service, b"title,body\na,b\n"), 422)
    assert "no text column" in message and "'title', 'body'" in message


@SQLITE
def test_named_text_column_that_is_missing_is_named(service: RunningStack) -> None:
    message = detail(upload(service, b"id,text\n1,fine\n", text_column="comment"), 422)
    assert "'comment'" in message and "'id', 'text'" in message


@SQLITE
def test_named_id_column_that_is_missing_is_named(service: RunningStack) -> None:
    message = detail(upload(service, b"id,text\n1,fine\n", id_column="review_id"), 422)
    assert "'review_id'" in message


@SQLITE
def test_semicolon_separated_file_is_read_with_its_separator(service: RunningStack) -> None:
    job = upload_ok(service, b"id;text\n-1;fine, really\n")
    assert (job["delimiter"], job["id_column"], job["scored"]) == (";", "id", 1)
    assert [r["id"] for r in results(service, job["id"])] == ["-1"]


@SQLITE
def test_a_text_column_named_twice_is_422_naming_both_positions(service: RunningStack) -> None:
    message = detail(upload(service, b"id,text,title,text\n1,a,b,c\n"), 422)
    assert "('text', 'text' at columns 2 and 4)" in message


@SQLITE
def test_header_names_match_ignoring_case_and_spaces(service: RunningStack) -> None:
    job = upload_ok(service, b" ID , Review \n1,A lovely film.\n")
    assert job["status"] == "succeeded" and job["scored"] == 1


# --- rows ----------------------------------------------------------------------------------


def test_duplicate_ids_are_kept_in_order(service: RunningStack) -> None:
    # Ids are labels the user chose, not keys: both rows are scored and come back in input order.
    body = csv_bytes([["id", "text"], ["a", "Great."], ["a", "Awful."], ["b", "Fine."]])
    job = upload_ok(service, body, id_column="id")
    assert (job["scored"], job["failed"]) == (3, 0)
    assert [r["id"] for r in results(service, job["id"])] == ["a", "a", "b"]


@SQLITE
def test_blank_and_whitespace_texts_fail_alone(service: RunningStack) -> None:
    body = csv_bytes([["text"], ["Good."], [""], ["   \t  "], ["Bad."]])
    job = upload_ok(service, body)
    assert job["status"] == "succeeded" and (job["scored"], job["failed"]) == (2, 2)
    errors = [r["error"] for r in results(service, job["id"])]
    assert errors == ["", "empty text", "empty text", ""]


@SQLITE
def test_empty_ids_fail_alone(service: RunningStack) -> None:
    body = csv_bytes([["id", "text"], ["1", "Good."], ["", "Bad."]])
    job = upload_ok(service, body, id_column="id")
    assert (job["scored"], job["failed"]) == (1, 1)
    assert "empty id" in results(service, job["id"])[1]["error"]


@SQLITE
def test_short_rows_fail_alone_and_long_rows_are_scored(service: RunningStack) -> None:
    body = b"id,text,stars\n1,Good.,5\n2\n3,Bad.,1,extra\n"
    job = upload_ok(service, body, id_column="id")
    assert (job["scored"], job["failed"]) == (2, 1)
    assert "1 fields, the header has 3" in results(service, job["id"])[1]["error"]


@SQLITE
def test_text_over_the_size_limit_fails_alone(service: RunningStack) -> None:
    limit = service.settings.max_text_bytes
    body = csv_bytes([["text"], ["Good."], ["word " * (limit // 5 + 10)], ["Bad."]])
    job = upload_ok(service, body)
    assert (job["scored"], job["failed"]) == (2, 1)
    assert f"over the limit of {limit:,}" in results(service, job["id"])[1]["error"]


@SQLITE
def test_runaway_field_fails_the_upload_but_keeps_earlier_rows(service: RunningStack) -> None:
    # A field far past any limit (an unterminated quote swallowing the file, say) stops the parse.
    rows = [["text"]] + [[f"review {i}"] for i in range(150)]
    body = csv_bytes(rows) + b'"' + b"x" * (2 * 1024 * 1024) + b'"\n'
    response = upload(service, body)
    message = detail(response, 422)
    assert "data row 151 is longer than 1,048,576 bytes" in message
    assert "kept the 150 rows" in message
    job_id = re.search(r"job ([0-9a-f]{32})", message).group(1)  # type: ignore[union-attr]
    job = service.wait_job(job_id, timeout=120)
    assert job["status"] == "failed" and (job["received"], job["done"]) == (150, 150)


@SQLITE
def test_unterminated_quote_is_malformed_csv(service: RunningStack) -> None:
    message = detail(upload(service, b'text\n"this never ends\n'), 422)
    assert "malformed CSV at data row 1" in message


def test_crlf_and_newlines_in_quoted_fields_are_kept(service: RunningStack) -> None:
    text = 'Line one,\r\nline two\nand a "quote".'
    body = csv_bytes([["id", "text"], ["x", text], ["y", "Plain."]], lineterminator="\r\n")
    job = upload_ok(service, body, id_column="id", keep_texts="true")
    assert (job["scored"], job["failed"]) == (2, 0)
    with service.http() as http:
        lines = http.get(f"/v1/jobs/{job['id']}/results", params={"format": "jsonl"}).text
    assert [json.loads(line)["id"] for line in lines.splitlines()] == ["x", "y"]
    engine = service.engine()
    assert [t for _, t in stored_texts(engine, job["id"])] == [text, "Plain."]
    engine.dispose()


def test_null_bytes_are_dropped_from_texts(service: RunningStack) -> None:
    body = b"id,text\n1,Good film.\n2,Bad\x00 film.\n3,\x00\x00\n"
    job = upload_ok(service, body, id_column="id")
    assert (job["scored"], job["failed"]) == (2, 1)
    assert [r["error"] for r in results(service, job["id"])] == ["", "", "empty text"]


def test_unicode_rtl_and_emoji_are_scored(service: RunningStack) -> None:
    texts = [
        "😍🍿🎬 " * 500,
        "هذا الفيلم رائع جدا \u200f والتمثيل ممتاز",
        "שחקנים מעולים, עלילה חלשה",
        "電影很好看。" * 200,
        "Z̷̢͉a̸̡͓l̵̗̈g̴̰̀o̶͎͝ text",
        "\U0001f9d1\u200d\U0001f91d\u200d\U0001f9d1 \ufeff mixed \u202e reversed",
    ]
    answer = service.client.score(texts)
    assert len(answer["results"]) == len(texts)
    # The size limit counts UTF-8 bytes: 4-byte emoji just under it are scored, just over fail.
    limit = service.settings.max_text_bytes
    texts += ["😍" * (limit // 4), "😍" * (limit // 4 + 1)]
    body = csv_bytes([["text"]] + [[t] for t in texts])
    job = upload_ok(service, body)
    assert (job["scored"], job["failed"]) == (len(texts) - 1, 1)
    assert "over the limit" in results(service, job["id"])[-1]["error"]


# --- bounded rows, honest row numbers (issue 11, items 2 and 12) ------------------------------


def _job_in(message: str) -> str:
    return re.search(r"job ([0-9a-f]{32})", message).group(1)  # type: ignore[union-attr]


@SQLITE
def test_a_row_of_commas_is_refused_while_it_is_read_and_the_rows_before_it_kept(
    service: RunningStack,
) -> None:
    # 50 MB of commas in one row: refused at the record cap, never parsed into 50 million
    # fields (API memory under a 200 MB row: bench/comma_bomb.py).
    def body() -> Iterator[bytes]:
        yield b"id,text\n1,A fine film.\n2,A dull film.\n3,A good film.\n"
        for _ in range(50):
            yield b"," * (1024 * 1024)
        yield b"\n"

    with service.http() as http:
        response = http.post("/v1/jobs", content=body(), headers={"Content-Type": "text/csv"})
    message = detail(response, 422)
    assert "data row 4 is longer than 1,048,576 bytes" in message, message
    assert "kept the 3 rows" in message
    job = service.wait_job(_job_in(message), timeout=120)
    assert job["status"] == "failed" and (job["received"], job["scored"]) == (3, 3)


def test_invalid_utf8_at_row_10001_names_it_and_keeps_every_row_before_it(
    service: RunningStack,
) -> None:
    rows = sample_reviews(10_000, seed=12)
    good = csv_bytes([["id", "text"]] + [[r["id"], r["text"]] for r in rows])
    message = detail(upload(service, good + b"bad,caf\xe9\nafter,fine\n"), 422)
    assert "not valid UTF-8 at data row 10,001 (byte 0xe9)" in message, message
    assert "kept the 10,000 rows" in message
    job = service.wait_job(_job_in(message), timeout=300)
    assert job["status"] == "failed" and (job["received"], job["done"]) == (10_000, 10_000)
    assert [r["id"] for r in results(service, job["id"])] == [r["id"] for r in rows]


# --- encodings -------------------------------------------------------------------------------


def test_a_legacy_encoding_is_detected_and_one_given_is_used(service: RunningStack) -> None:
    body = 'text\n"Un film très réussi, «bravo»."\n'.encode("latin-1")
    detected = upload_ok(service, body, keep_texts="true")
    named = upload_ok(service, body, encoding="latin-1", keep_texts="true")
    assert (detected["encoding"], named["encoding"]) == ("windows-1252", "iso8859-1")
    engine = service.engine()
    for job in (detected, named):
        assert stored_texts(engine, job["id"]) == [(None, "Un film très réussi, «bravo».")]
    engine.dispose()


@SQLITE
def test_declared_charset_is_used_and_a_bad_one_is_named(service: RunningStack) -> None:
    body = "text\nUn film très réussi.\n".encode("latin-1")
    with service.http() as http:
        ok = http.post(
            "/v1/jobs", content=body, headers={"Content-Type": "text/csv; charset=latin-1"}
        )
        bad = http.post("/v1/jobs", content=body, headers={"Content-Type": "text/csv; charset=xx"})
        part = http.post(
            "/v1/jobs", files={"file": ("r.csv", body, "text/csv; charset=iso-8859-1")}
        )
    assert ok.status_code == 202 and part.status_code == 202, (ok.text, part.text)
    assert "'xx'" in detail(bad, 422)


@SQLITE
def test_unknown_or_non_text_encoding_is_named(service: RunningStack) -> None:
    # rot13 and base64 are codecs, but not text encodings: refused, not a crash.
    for name in ("klingon", "rot13", "base64", "undefined"):
        assert f"'{name}'" in detail(upload(service, b"text\nok\n", encoding=name), 422)


@SQLITE
def test_utf16_cut_mid_character_is_refused_clearly(service: RunningStack) -> None:
    body = "text\nGood.\n".encode("utf-16") + b"G"
    message = detail(upload(service, body), 422)
    assert "not valid UTF-16 near data row 2" in message


@SQLITE
def test_utf8_bom_is_accepted(service: RunningStack) -> None:
    job = upload_ok(service, "\ufeffid,text\n1,Good.\n".encode(), id_column="id")
    assert job["text_column"] == "text" and job["id_column"] == "id" and job["scored"] == 1


@SQLITE
def test_utf16_is_detected_by_its_bom(service: RunningStack) -> None:
    body = "text\r\nGood.\r\nBad.\r\n".encode("utf-16")
    job = upload_ok(service, body)
    assert (job["encoding"], job["scored"], job["failed"]) == ("utf-16", 2, 0)
    assert upload_ok(service, body, encoding="utf-16")["scored"] == 2


# --- gzip ----------------------------------------------------------------------------------


@SQLITE
def test_gzip_upload_is_accepted(service: RunningStack) -> None:
    body = gzip.compress(csv_bytes([["text"]] + [[f"Review {i}, good."] for i in range(30)]))
    job = upload_ok(service, body, filename="r.csv.gz", ctype="application/gzip")
    assert job["scored"] == 30
    with service.http() as http:
        raw = http.post("/v1/jobs", content=body, headers={"Content-Type": "application/gzip"})
    assert raw.status_code == 202


@SQLITE
def test_gzip_bomb_is_refused(service: RunningStack) -> None:
    # 64 MB of line breaks in ~64 KB: refused by its ratio long before it is all inflated.
    body = gzip.compress(b"text\n" + b"\n" * (64 * 1024 * 1024), compresslevel=9)
    message = detail(upload(service, body, filename="bomb.csv.gz"), 413)
    assert "gzip bomb" in message


@SQLITE
def test_corrupt_gzip_is_refused(service: RunningStack) -> None:
    body = b"\x1f\x8b\x08\x00" + b"not really gzip at all" * 10
    assert "gzip" in detail(upload(service, body, filename="r.csv.gz"), 422)


@SQLITE
def test_truncated_gzip_is_refused(service: RunningStack) -> None:
    whole = gzip.compress(csv_bytes([["text"]] + [[f"Review number {i}."] for i in range(500)]))
    message = detail(upload(service, whole[: len(whole) // 2], filename="r.csv.gz"), 422)
    assert "ends early" in message


# --- the request itself --------------------------------------------------------------------


@SQLITE
def test_wrong_content_type_is_415(service: RunningStack) -> None:
    with service.http() as http:
        as_json = http.post("/v1/jobs", json={"text": "hello"})
        as_xml = http.post("/v1/jobs", content=b"<a/>", headers={"Content-Type": "text/xml"})
    assert "POST /v1/score" in detail(as_json, 415)
    assert "'text/xml'" in detail(as_xml, 415)


@SQLITE
def test_missing_file_field_is_named(service: RunningStack) -> None:
    with service.http() as http:
        response = http.post("/v1/jobs", files={"upload": ("r.csv", b"text\nok\n", "text/csv")})
    assert "no 'file' field" in detail(response, 422)


@SQLITE
def test_multipart_without_boundary_is_named(service: RunningStack) -> None:
    with service.http() as http:
        response = http.post(
            "/v1/jobs", content=b"text\nok\n", headers={"Content-Type": "multipart/form-data"}
        )
    assert "no boundary" in detail(response, 400)


@SQLITE
def test_multipart_body_cut_in_the_file_is_refused(service: RunningStack) -> None:
    body = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="r.csv"\r\n\r\ntext\nok'
    with service.http() as http:
        response = http.post(
            "/v1/jobs", content=body, headers={"Content-Type": "multipart/form-data; boundary=xyz"}
        )
    assert "ended in the middle" in detail(response, 400)


@SQLITE
def test_unknown_model_is_named(service: RunningStack) -> None:
    assert "'nope'" in detail(upload(service, b"text\nok\n", model="nope"), 422)
    with service.http() as http:
        response = http.post("/v1/score", json={"reviews": ["ok"], "model": "nope"})
    assert "'nope'" in detail(response, 422)


def test_upload_over_the_size_limit_is_413(small_limits: RunningStack) -> None:
    body = csv_bytes([["text"]] + [["A long enough review text. " * 20]] * 45)
    message = detail(upload(small_limits, body), 413)
    assert "20,000 bytes" in message


def test_gzip_expanding_past_the_size_limit_is_413(small_limits: RunningStack) -> None:
    # 30 rows (under the 50-row limit) of 2,000 bytes each: 60 KB expanded, tiny compressed.
    body = gzip.compress(b"text\n" + (b"same words again and again " * 75 + b"\n") * 30)
    assert len(body) < 20000
    assert "expands to more than 20,000" in detail(upload(small_limits, body), 413)


def test_too_many_rows_is_413_and_keeps_the_first_ones(small_limits: RunningStack) -> None:
    body = csv_bytes([["text"]] + [[f"r{i}"] for i in range(60)])
    message = detail(upload(small_limits, body), 413)
    assert "more than 50 rows" in message and "kept the 50 rows" in message
    job_id = re.search(r"job ([0-9a-f]{32})", message).group(1)  # type: ignore[union-attr]
    job = small_limits.wait_job(job_id, timeout=120)
    assert job["status"] == "failed" and (job["total"], job["scored"]) == (50, 50)
    assert "more than 50 rows" in job["error"]


# --- job ids and job states --------------------------------------------------------------


@SQLITE
def test_unknown_job_id_is_404_everywhere(service: RunningStack) -> None:
    job_id = "0" * 32
    with service.http() as http:
        for response in (
            http.get(f"/v1/jobs/{job_id}"),
            http.get(f"/v1/jobs/{job_id}/results"),
            http.post(f"/v1/jobs/{job_id}/cancel"),
            http.delete(f"/v1/jobs/{job_id}"),
        ):
            assert job_id in detail(response, 404)


@SQLITE
def test_malformed_job_id_is_422(service: RunningStack) -> None:
    with service.http() as http:
        for path in ("/v1/jobs/not-a-job", "/v1/jobs/" + "G" * 32 + "/results"):
            assert http.get(path).status_code == 422


@SQLITE
def test_bad_query_parameters_are_422(service: RunningStack) -> None:
    with service.http() as http:
        assert http.get("/v1/jobs", params={"limit": 0}).status_code == 422
        assert http.get("/v1/jobs", params={"offset": -1}).status_code == 422
        response = http.get("/v1/jobs/" + "0" * 32 + "/results", params={"format": "xml"})
    detail(response, 422)


@SQLITE
def test_cancel_of_a_finished_job_is_409(service: RunningStack) -> None:
    job = upload_ok(service, b"text\nGood.\n")
    with service.http() as http:
        response = http.post(f"/v1/jobs/{job['id']}/cancel")
    assert "already succeeded" in detail(response, 409)


HELD_ROWS = 1500


class HeldOpenUpload:
    """An upload that sends 1,500 rows (1.2 MB: past the first MiB, read before any row is
    stored), then waits: its job stays `uploading` until released."""

    def __init__(self, service: RunningStack) -> None:
        self.service = service
        self.release = threading.Event()
        self.response: httpx.Response | None = None
        self._sender = threading.Thread(target=self._send)

    def _body(self) -> Iterator[bytes]:
        padding = "and it goes on. " * 50
        rows = [[str(i), f"Review {i}, {padding}"] for i in range(HELD_ROWS)]
        yield csv_bytes([["id", "text"], *rows])
        self.release.wait(60)
        yield b"%d,The last one.\n" % HELD_ROWS

    def _send(self) -> None:
        with self.service.http() as http:
            self.response = http.post(
                "/v1/jobs", content=self._body(), headers={"Content-Type": "text/csv"}
            )

    def __enter__(self) -> dict[str, Any]:
        self._sender.start()
        return wait_for(  # type: ignore[no-any-return]
            lambda: next(
                (
                    j
                    for j in self.service.client.jobs(limit=5)["jobs"]
                    if j["status"] == "uploading" and j["received"] >= 100
                ),
                None,
            ),
            30,
            "the held-open upload to store its first chunk",
        )

    def __exit__(self, *_: object) -> None:
        self.release.set()
        self._sender.join(60)


@SQLITE
def test_results_of_an_unfinished_job_are_409_unless_partial(service: RunningStack) -> None:
    upload = HeldOpenUpload(service)
    with upload as job, service.http() as http:
        message = detail(http.get(f"/v1/jobs/{job['id']}/results"), 409)
        assert "uploading" in message and "partial=true" in message
        partial = http.get(f"/v1/jobs/{job['id']}/results", params={"partial": "true"})
        assert partial.status_code == 200
        assert len(list(csv.DictReader(io.StringIO(partial.text)))) >= 100
    assert upload.response is not None and upload.response.status_code == 202
    assert service.wait_job(upload.response.json()["id"])["scored"] == HELD_ROWS + 1


@SQLITE
def test_delete_of_a_job_still_uploading_is_409(service: RunningStack) -> None:
    upload = HeldOpenUpload(service)
    with upload as job, service.http() as http:
        message = detail(http.delete(f"/v1/jobs/{job['id']}"), 409)
        assert "uploading" in message
    assert upload.response is not None and upload.response.status_code == 202
    service.wait_job(job["id"])
    with service.http() as http:
        assert http.delete(f"/v1/jobs/{job['id']}").status_code == 204


# --- /v1/score -------------------------------------------------------------------------------


@SQLITE
def test_score_bad_json_is_422(service: RunningStack) -> None:
    with service.http() as http:
        response = http.post(
            "/v1/score", content=b'{"reviews": [', headers={"Content-Type": "application/json"}
        )
    detail(response, 422)


@SQLITE
def test_score_too_many_reviews_is_422(service: RunningStack) -> None:
    with service.http() as http:
        response = http.post("/v1/score", json={"reviews": ["good"] * 300})
    assert "limit is 256" in detail(response, 422)


@SQLITE
def test_score_non_string_or_missing_reviews_are_422(service: RunningStack) -> None:
    with service.http() as http:
        for payload in (
            {"reviews": [1, 2]},
            {"reviews": "a single string"},
            {"reviews": [None]},
            {"reviews": []},
            {"texts": ["good"]},
            ["good"],
        ):
            detail(http.post("/v1/score", json=payload), 422)


@SQLITE
def test_score_empty_or_null_only_review_is_422(service: RunningStack) -> None:
    with service.http() as http:
        for text in ("", "   ", "\x00\x00"):
            assert "review 1 is empty" in detail(
                http.post("/v1/score", json={"reviews": ["fine", text]}), 422
            )


@SQLITE
def test_score_review_over_the_size_limit_is_422(service: RunningStack) -> None:
    big = "x" * (service.settings.max_text_bytes + 1)
    with service.http() as http:
        response = http.post("/v1/score", json={"reviews": [big]})
    assert "over the limit" in detail(response, 422)


@SQLITE
def test_score_drops_null_bytes_from_texts(service: RunningStack) -> None:
    with_nul, without = service.client.score(["A bril\x00liant\x00 film.", "A brilliant film."])[
        "results"
    ]
    # Dropped, not kept: "bril\x00liant" would be a word the model has never seen.
    assert with_nul["p_positive"] == without["p_positive"]


def test_long_or_odd_filenames_and_column_names_are_kept_short(service: RunningStack) -> None:
    long_name = "r" * 400 + ".csv"
    job = upload_ok(service, b"text\nGood.\n", filename=long_name)
    assert job["filename"] == long_name[:255]
    body = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="bad\x00name.csv"\r\n'
        b"\r\ntext\nGood.\n\r\n--b--\r\n"
    )
    with service.http() as http:
        response = http.post(
            "/v1/jobs", content=body, headers={"Content-Type": "multipart/form-data; boundary=b"}
        )
    assert response.status_code == 202, response.text
    assert response.json()["filename"] == "badname.csv"
    column = "c" * 300
    job = upload_ok(service, f"{column}\nGood.\n".encode(), text_column=column)
    assert job["text_column"] == column[:255] and job["scored"] == 1


@SQLITE
def test_score_lone_surrogate_is_422(service: RunningStack) -> None:
    with service.http() as http:
        response = http.post(
            "/v1/score",
            content=b'{"reviews": ["fine", "bad \\ud800 half a pair"]}',
            headers={"Content-Type": "application/json"},
        )
    assert "review 1" in detail(response, 422)


def test_lone_surrogates_from_an_escape_encoding_fail_alone(service: RunningStack) -> None:
    body = b"id,text\n1,Good.\n2,Bad \\ud800 pair.\n"
    job = upload_ok(service, body, id_column="id", encoding="unicode_escape")
    assert (job["scored"], job["failed"]) == (1, 1)
    assert "lone surrogate" in results(service, job["id"])[1]["error"]
