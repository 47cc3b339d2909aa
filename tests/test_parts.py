"""Uploads in parts against the real service (Redis, Celery workers, SQLite and PostgreSQL):
parts sent out of order, sent again, conflicting, refused, missing at `complete`, and spread
over two API processes at once, as docs/how-to/parts.md shows them."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tests.conftest import RunningStack, another_api, sample_reviews


def csv_part(rows: list[dict[str, Any]], columns: list[str]) -> bytes:
    """A self-contained CSV part: the header, then whole records."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def numbered(n: int, seed: int = 11) -> list[dict[str, Any]]:
    rows = sample_reviews(n, seed=seed)
    return [{"n": str(i + 1), "text": r["text"]} for i, r in enumerate(rows)]


def split(rows: list[dict[str, Any]], sizes: list[int]) -> list[list[dict[str, Any]]]:
    pieces, at = [], 0
    for size in sizes:
        pieces.append(rows[at : at + size])
        at += size
    return pieces


def results_jsonl(http: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    body = http.get(f"/v1/jobs/{job_id}/results", params={"format": "jsonl"}).text
    return [json.loads(line) for line in body.splitlines()]


def new_parts_job(http: httpx.Client, **options: str) -> dict[str, Any]:
    answer = http.post("/v1/jobs", params={"parts": "true", **options})
    assert answer.status_code == 201, answer.text
    job: dict[str, Any] = answer.json()
    assert job["status"] == "uploading" and job["in_parts"] is True
    return job


def test_parts_sent_out_of_order_keep_the_input_order(service: RunningStack) -> None:
    rows = numbered(450)
    pieces = split(rows, [120, 200, 130])
    with service.http() as http:
        job = new_parts_job(http, keep_columns="n")
        for number in (3, 1, 2):
            body = csv_part(pieces[number - 1], ["n", "text"])
            if number == 2:
                body = gzip.compress(body)  # any part may be gzipped
            answer = http.put(f"/v1/jobs/{job['id']}/parts/{number}", content=body)
            assert answer.status_code == 201, answer.text
            stored = answer.json()
            assert stored["rows"] == len(pieces[number - 1])
            assert stored["sha256"] == hashlib.sha256(body).hexdigest()
            assert stored["already_stored"] is False
        listed = http.get(f"/v1/jobs/{job['id']}/parts").json()
        assert [(p["number"], p["state"], p["rows"]) for p in listed["parts"]] == [
            (1, "stored", 120),
            (2, "stored", 200),
            (3, "stored", 130),
        ]
        done = http.post(f"/v1/jobs/{job['id']}/complete", json={"parts": 3})
        assert done.status_code == 200, done.text
        assert done.json()["total"] == 450 and done.json()["parts_total"] == 3
        finished = service.wait_job(job["id"])
        assert finished["status"] == "succeeded"
        assert (finished["scored"], finished["failed"]) == (450, 0)
        results = results_jsonl(http, job["id"])
    # Default ids are the rows' places in the file, part by part: 1..450 in order, each the
    # row the user numbered so.
    assert [r["id"] for r in results] == [str(i) for i in range(1, 451)]
    assert [r["n"] for r in results] == [r["id"] for r in results]


def test_a_part_sent_again_stores_nothing_and_other_bytes_are_refused(
    service: RunningStack,
) -> None:
    rows = numbered(150, seed=12)
    first, second = csv_part(rows[:100], ["n", "text"]), csv_part(rows[100:], ["n", "text"])
    with service.http() as http:
        job = new_parts_job(http, id_column="n")
        url = f"/v1/jobs/{job['id']}/parts/1"
        assert http.put(url, content=first).status_code == 201
        again = http.put(url, content=first)
        assert again.status_code == 200, again.text
        assert again.json()["already_stored"] is True
        assert again.json()["rows"] == 100
        other = http.put(url, content=second)
        assert other.status_code == 409
        assert "stored with other bytes" in other.json()["detail"]
        assert http.get(f"/v1/jobs/{job['id']}").json()["received"] == 100
        assert http.put(f"/v1/jobs/{job['id']}/parts/2", content=second).status_code == 201
        assert http.post(f"/v1/jobs/{job['id']}/complete", json={"parts": 2}).status_code == 200
        # `complete` again with the same count answers the job; another count is refused.
        assert http.post(f"/v1/jobs/{job['id']}/complete", json={"parts": 2}).status_code == 200
        assert http.post(f"/v1/jobs/{job['id']}/complete", json={"parts": 3}).status_code == 409
        finished = service.wait_job(job["id"])
        results = results_jsonl(http, job["id"])
    assert finished["total"] == 150 and finished["scored"] == 150
    assert [r["id"] for r in results] == [r["n"] for r in rows]


def test_complete_names_the_missing_parts(service: RunningStack) -> None:
    rows = numbered(60, seed=13)
    with service.http() as http:
        job = new_parts_job(http)
        for number in (1, 3):
            piece = rows[(number - 1) * 20 : number * 20]
            assert (
                http.put(
                    f"/v1/jobs/{job['id']}/parts/{number}", content=csv_part(piece, ["n", "text"])
                ).status_code
                == 201
            )
        early = http.post(f"/v1/jobs/{job['id']}/complete", json={"parts": 4})
        assert early.status_code == 409
        assert "parts 2, 4 are not stored yet" in early.json()["detail"]
        short = http.post(f"/v1/jobs/{job['id']}/complete", json={"parts": 2})
        assert short.status_code == 409 and "part 2 is not stored yet" in short.json()["detail"]
        assert http.get(f"/v1/jobs/{job['id']}").json()["status"] == "uploading"
        piece = rows[20:40]
        http.put(f"/v1/jobs/{job['id']}/parts/2", content=csv_part(piece, ["n", "text"]))
        assert http.post(f"/v1/jobs/{job['id']}/complete", json={"parts": 3}).status_code == 200
        assert service.wait_job(job["id"])["total"] == 60


def test_a_refused_part_leaves_the_job_and_its_other_parts_as_they_were(
    service: RunningStack,
) -> None:
    rows = numbered(90, seed=14)
    good = csv_part(rows[:40], ["n", "text"])
    with service.http() as http:
        job = new_parts_job(http, id_column="n")
        assert http.put(f"/v1/jobs/{job['id']}/parts/1", content=good).status_code == 201
        # A part whose header lacks the text column the first part was read with.
        wrong = csv_part([{"n": "x", "body": "fine"}], ["n", "body"])
        refused = http.put(f"/v1/jobs/{job['id']}/parts/2", content=wrong)
        assert refused.status_code == 422
        assert refused.json()["detail"].startswith("part 2 refused: ")
        # A part cut inside a quoted text: rows before the cut were stored, then dropped.
        cut = csv_part(rows[40:90], ["n", "text"]) + b'91,"an unterminated quote'
        refused = http.put(f"/v1/jobs/{job['id']}/parts/2", content=cut)
        assert refused.status_code in (400, 422), refused.text
        assert "nothing of it was kept" in refused.json()["detail"]
        state = http.get(f"/v1/jobs/{job['id']}").json()
        assert state["received"] == 40 and state["status"] != "failed"
        assert [p["number"] for p in http.get(f"/v1/jobs/{job['id']}/parts").json()["parts"]] == [1]
        fixed = csv_part(rows[40:90], ["n", "text"])
        assert http.put(f"/v1/jobs/{job['id']}/parts/2", content=fixed).status_code == 201
        assert http.post(f"/v1/jobs/{job['id']}/complete", json={"parts": 2}).status_code == 200
        finished = service.wait_job(job["id"])
        results = results_jsonl(http, job["id"])
    assert (finished["total"], finished["scored"], finished["failed"]) == (90, 90, 0)
    assert [r["id"] for r in results] == [r["n"] for r in rows]


def test_parts_spread_over_two_api_processes_at_once(service: RunningStack) -> None:
    rows = numbered(1200, seed=15)
    pieces = split(rows, [100] * 12)
    bodies = [csv_part(p, ["n", "text"]) for p in pieces]
    with another_api(service) as (second_url, _), service.http() as http:
        job = new_parts_job(http, id_column="n")
        urls = [service.url, second_url]

        def send(number: int) -> int:
            url = f"{urls[number % 2]}/v1/jobs/{job['id']}/parts/{number}"
            return httpx.put(url, content=bodies[number - 1], timeout=60).status_code

        with ThreadPoolExecutor(4) as pool:
            codes = list(pool.map(send, range(12, 0, -1)))
        assert codes == [201] * 12
        done = httpx.post(f"{second_url}/v1/jobs/{job['id']}/complete", json={"parts": 12})
        assert done.status_code == 200, done.text
        finished = service.wait_job(job["id"])
        results = results_jsonl(http, job["id"])
    assert (finished["total"], finished["scored"]) == (1200, 1200)
    assert [r["id"] for r in results] == [r["n"] for r in rows]


def test_parts_need_a_job_created_for_them(service: RunningStack) -> None:
    with service.http() as http:
        body = csv_part(numbered(5), ["n", "text"])
        job = http.post("/v1/jobs", content=body, headers={"Content-Type": "text/csv"}).json()
        refused = http.put(f"/v1/jobs/{job['id']}/parts/1", content=body)
        assert refused.status_code == 409 and "not created for parts" in refused.json()["detail"]
        with_body = http.post("/v1/jobs", params={"parts": "true"}, content=body)
        assert with_body.status_code == 400 and "no body" in with_body.json()["detail"]
        parts_job = new_parts_job(http)
        beyond = http.put(f"/v1/jobs/{parts_job['id']}/parts/10001", content=body)
        assert beyond.status_code == 422
