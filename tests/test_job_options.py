"""A job's own options, in-process (FastAPI's TestClient) on real SQLite and PostgreSQL with the
chunk task run here on the stub scorer: an Idempotency-Key on POST /v1/jobs, labels
(`metadata`) and the label filter, a deadline past which the job ends `expired`,
max_failed_fraction and results_expire_after. What is checked is what a client sees."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from reviewscore.client import Client, ClientError
from reviewscore.core import chunks, idempotency, sweeper, webhooks
from reviewscore.core.clock import db_now_plus
from reviewscore.core.db import session_scope
from reviewscore.core.schema import IdempotencyKey, Job, WebhookEvent
from reviewscore.core.settings import get_settings
from tests import factories as f
from tests.inprocess import work_off
from tests.test_routes import REVIEWS, api, upload
from worker import tasks

__all__ = ["api"]  # a fixture, imported to be used here

pytestmark = pytest.mark.usefixtures("database")


@pytest.fixture(autouse=True)
def no_delivery(monkeypatch: pytest.MonkeyPatch) -> None:
    """A job that ends queues its results' delivery: there is no Redis here to send it to."""
    monkeypatch.setattr(tasks, "enqueue_delivery", lambda _job_id: None)


def post(api: TestClient, body: str, key: str | None = None, **params: Any) -> Any:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return api.post(
        "/v1/jobs",
        params=params,
        files={"file": ("reviews.csv", body.encode(), "text/csv")},
        headers=headers,
    )


def sweep() -> sweeper.SweepReport:
    return sweeper.sweep(get_settings(), queue_is_empty=lambda: False, enqueue=lambda j, s: None)


def rows_of(api: TestClient, job_id: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(api.get(f"/v1/jobs/{job_id}/results").text)))


# --- Idempotency-Key -------------------------------------------------------------------------


def test_the_same_key_and_file_answer_the_same_job_and_another_file_is_422(
    api: TestClient,
) -> None:
    first = post(api, REVIEWS, key="upload-7", id_column="id")
    assert first.status_code == 202, first.text
    # Sent again: a new multipart boundary, the same file and options.
    again = post(api, REVIEWS, key="upload-7", id_column="id")
    assert again.status_code == 202, again.text
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["received"] == 10
    other = post(api, REVIEWS.replace("review number 3", "review number three"), key="upload-7")
    assert other.status_code == 422
    assert "Idempotency-Key 'upload-7' was used in the last 24 h" in other.json()["detail"]
    options_differ = post(api, REVIEWS, key="upload-7", id_column="id", deadline="2h")
    assert options_differ.status_code == 422
    assert api.get("/v1/jobs").json()["total"] == 1
    # Another key is another job; no key, always a new one.
    assert post(api, REVIEWS, key="upload-8").json()["id"] != first.json()["id"]
    assert api.get("/v1/jobs").json()["total"] == 2


def test_a_key_on_a_job_in_parts_answers_it_again_with_201(api: TestClient) -> None:
    params = {"parts": "true", "id_column": "id"}
    first = api.post("/v1/jobs", params=params, headers={"Idempotency-Key": "p1"})
    again = api.post("/v1/jobs", params=params, headers={"Idempotency-Key": "p1"})
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json()["id"] == first.json()["id"] and again.json()["in_parts"]
    other = api.post("/v1/jobs", params={"parts": "true"}, headers={"Idempotency-Key": "p1"})
    assert other.status_code == 422 and "another request" in other.json()["detail"]


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)  # the same SQL as above
def test_a_key_on_a_source_url_answers_its_job_without_fetching_again(
    api: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "dumps" / "reviews.csv"
    source.parent.mkdir()
    source.write_text(REVIEWS)
    monkeypatch.setenv("REVIEWSCORE_URL_ALLOW", "file:///")
    monkeypatch.setenv("REVIEWSCORE_URL_FILE_DIRS", str(source.parent))
    get_settings.cache_clear()
    body = {"source_url": source.as_uri(), "id_column": "id"}
    first = api.post("/v1/jobs", json=body, headers={"Idempotency-Key": "dump-1"})
    assert first.status_code == 202, first.text
    source.unlink()  # not fetched again: the key answers the job
    again = api.post("/v1/jobs", json=body, headers={"Idempotency-Key": "dump-1"})
    assert again.status_code == 202, again.text
    assert again.json()["id"] == first.json()["id"]
    other = api.post(
        "/v1/jobs", json=body | {"id_column": "text"}, headers={"Idempotency-Key": "dump-1"}
    )
    assert other.status_code == 422 and "dump-1" in other.json()["detail"]


def test_two_requests_at_once_with_the_same_key_keep_one_job(api: TestClient) -> None:
    # Both requests looked the key up before either bound it (so both stored their file):
    # the primary key lets the first bind, and the second discards its job for the first's.
    key = idempotency.RequestKey("anonymous", "same-time")
    first, second = upload(api, REVIEWS)["id"], upload(api, REVIEWS)["id"]
    assert idempotency.bind(key, "a" * 64, first) == (first, False)
    assert idempotency.bind(key, "a" * 64, second) == (first, True)
    assert api.get(f"/v1/jobs/{second}").status_code == 404
    assert [j["id"] for j in api.get("/v1/jobs").json()["jobs"]] == [first]
    third = upload(api, REVIEWS)["id"]
    with pytest.raises(idempotency.IdempotencyConflictError):
        idempotency.bind(key, "b" * 64, third)
    assert api.get(f"/v1/jobs/{third}").status_code == 404


def test_after_24_hours_the_key_makes_a_new_job(api: TestClient) -> None:
    first = post(api, REVIEWS, key="daily").json()
    with session_scope() as session:
        session.execute(update(IdempotencyKey).values(created_at=db_now_plus(-25 * 3600)))
    later = post(api, REVIEWS, key="daily")
    assert later.status_code == 202 and "Idempotent-Replayed" not in later.headers
    assert later.json()["id"] != first["id"]
    assert post(api, REVIEWS, key="daily").json()["id"] == later.json()["id"]


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)  # no SQL of its own
def test_a_malformed_key_is_422(api: TestClient) -> None:
    answer = post(api, REVIEWS, key="x" * 300)
    assert answer.status_code == 422 and "Idempotency-Key" in answer.json()["detail"]
    assert api.get("/v1/jobs").json()["total"] == 0


# --- labels ----------------------------------------------------------------------------------


def test_labels_come_back_as_metadata_and_filter_the_job_list(api: TestClient) -> None:
    labels = [f"k{i}:v{i}" for i in range(15)] + ["team:search"]
    tagged = upload(api, REVIEWS, label=labels)  # type: ignore[arg-type]
    assert tagged["metadata"] == {**{f"k{i}": f"v{i}" for i in range(15)}, "team": "search"}
    # As form fields before the file, one per pair.
    form = api.post(
        "/v1/jobs",
        data={"label": ["team:ads", "url:http://x/y"]},
        files={"file": ("reviews.csv", REVIEWS.encode(), "text/csv")},
    )
    assert form.status_code == 202, form.text
    assert form.json()["metadata"] == {"team": "ads", "url": "http://x/y"}
    upload(api, REVIEWS)

    def listed(*wanted: str) -> list[str]:
        return [j["id"] for j in api.get("/v1/jobs", params={"label": wanted}).json()["jobs"]]

    assert listed("team:search") == [tagged["id"]]
    assert listed("team") == [form.json()["id"], tagged["id"]]
    assert listed("team:search", "k3:v3") == [tagged["id"]]
    assert listed("team:search", "k3:other") == []
    assert api.get("/v1/jobs", params={"label": "team:ads"}).json()["total"] == 1
    assert api.get(f"/v1/jobs/{tagged['id']}").json()["metadata"]["team"] == "search"


def test_seventeen_labels_or_a_label_without_a_colon_are_422(api: TestClient) -> None:
    many = post(api, REVIEWS, label=[f"k{i}:v" for i in range(17)])
    assert many.status_code == 422
    assert many.json()["detail"] == "a job has at most 16 labels (got 17)"
    bare = post(api, REVIEWS, label=["team"])
    assert bare.status_code == 422 and "is not key:value" in bare.json()["detail"]
    twice = post(api, REVIEWS, label=["a:1", "a:2"])
    assert twice.status_code == 422 and "given twice" in twice.json()["detail"]
    assert api.get("/v1/jobs").json()["total"] == 0


# --- deadline --------------------------------------------------------------------------------


def pass_deadline(job_id: str) -> None:
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(deadline_at=db_now_plus(-1)))


def test_a_job_past_its_deadline_ends_expired_with_the_rows_done_downloadable(
    api: TestClient, sent: list[tuple[str, int]], stub_model: f.StubScorer
) -> None:
    job = upload(api, REVIEWS, id_column="id", deadline="2h")
    assert job["deadline_at"] is not None and not job["finished"]
    work_off(sent[:1])  # chunk 0: rows 1-4 scored
    in_flight = f.claim(job["id"], 1)  # chunk 1 handed out before the deadline
    assert in_flight is not None
    pass_deadline(job["id"])
    assert f.claim(job["id"], 2) is None, "no chunk is handed out past the deadline"
    # Nor by the workers' fair claim, which takes whichever chunk is next.
    assert chunks.claim_next(None, lease_s=60, max_attempts=3, worker="t:1", chunk_rows=4) is None
    assert sweep().past_deadline == [job["id"]]
    expired = api.get(f"/v1/jobs/{job['id']}").json()
    assert (expired["status"], expired["finished"]) == ("expired", True)
    assert (expired["total"], expired["scored"], expired["failed"]) == (10, 4, 0)
    assert "deadline" in expired["error"] and "4 of 10 rows done" in expired["error"]
    # The chunk scored meanwhile is not written: counts never move once the job is final.
    assert f.complete(in_flight) is False
    work_off(sent)
    assert sweep().past_deadline == []
    after = api.get(f"/v1/jobs/{job['id']}").json()
    assert (after["status"], after["scored"], after["failed"]) == ("expired", 4, 0)
    rows = rows_of(api, job["id"])
    assert [r["id"] for r in rows] == [f"r{i}" for i in range(1, 11)]
    assert [bool(r["p_positive"]) for r in rows] == [True] * 4 + [False] * 6
    assert f.tally(job["id"]).consistent


def test_an_expired_job_announces_job_expired_to_its_callback_url(
    api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REVIEWSCORE_URL_ALLOW", "http://127.0.0.1:9/")
    monkeypatch.setenv("REVIEWSCORE_WEBHOOK_SECRET", webhooks.new_secret())
    get_settings.cache_clear()
    job = upload(api, REVIEWS, deadline="2h", callback_url="http://127.0.0.1:9/hook")
    pass_deadline(job["id"])
    assert sweep().past_deadline == [job["id"]]
    with session_scope() as session:
        events = session.scalars(
            select(WebhookEvent.type).where(WebhookEvent.job_id == job["id"])
        ).all()
    assert events == ["job.expired"]
    get_settings.cache_clear()


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)  # no SQL of its own
def test_a_deadline_that_is_not_a_duration_is_422(api: TestClient) -> None:
    answer = post(api, REVIEWS, deadline="2 weeks")
    assert answer.status_code == 422
    assert answer.json()["detail"].startswith("deadline '2 weeks' is not a duration")
    assert post(api, REVIEWS, deadline="0h").status_code == 422


# --- max_failed_fraction ---------------------------------------------------------------------

# Rows 1-4 (the first chunk) have empty texts: they fail at ingest, 4 of 10.
SOME_EMPTY = "id,text\n" + "".join(
    f"r{i},{'' if i <= 4 else f'review number {i} is fine'}\n" for i in range(1, 11)
)


def test_failed_rows_past_max_failed_fraction_end_the_job_failed_early(
    api: TestClient, sent: list[tuple[str, int]], stub_model: f.StubScorer
) -> None:
    job = upload(api, SOME_EMPTY, id_column="id", max_failed_fraction="0.2")
    assert job["max_failed_fraction"] == 0.2
    work_off(sent[:1])
    failed = api.get(f"/v1/jobs/{job['id']}").json()
    assert (failed["status"], failed["finished"]) == ("failed", True)
    assert failed["error"].startswith("failed rows 4 of 10 passed max_failed_fraction 0.2")
    work_off(sent)  # the other chunks are never handed out
    after = api.get(f"/v1/jobs/{job['id']}").json()
    assert (after["scored"], after["failed"], after["status"]) == (0, 4, "failed")
    assert [r["error"] for r in rows_of(api, job["id"])][:4] == ["empty text"] * 4


def test_failed_rows_within_max_failed_fraction_let_the_job_succeed(
    api: TestClient, sent: list[tuple[str, int]], stub_model: f.StubScorer
) -> None:
    job = upload(api, SOME_EMPTY, max_failed_fraction="0.4")
    work_off(sent)
    done = api.get(f"/v1/jobs/{job['id']}").json()
    assert (done["status"], done["scored"], done["failed"], done["error"]) == (
        "succeeded",
        6,
        4,
        None,
    )
    assert post(api, REVIEWS, max_failed_fraction="1.5").status_code == 422


# --- results_expire_after --------------------------------------------------------------------


def test_results_expire_after_is_kept_within_the_retention_and_purges_the_job(
    api: TestClient,
) -> None:
    beyond = post(api, REVIEWS, results_expire_after="40d")
    assert beyond.status_code == 422
    assert "beyond the service's retention of 30 days" in beyond.json()["detail"]
    short = upload(api, REVIEWS, results_expire_after="1d")
    assert short["results_expire_after_s"] == 86400
    kept = upload(api, REVIEWS)
    for job in (short, kept):  # finished (cancelled is final at once)
        assert api.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    with session_scope() as session:
        session.execute(update(Job).values(finished_at=db_now_plus(-2 * 86400)))
    assert sweep().purged == [short["id"]]
    assert api.get(f"/v1/jobs/{short['id']}").status_code == 404
    assert api.get(f"/v1/jobs/{kept['id']}").json()["finished"] is True


# --- the client and the CLI ------------------------------------------------------------------


@pytest.fixture
def client(api: TestClient) -> Client:
    """The Python client, its HTTP going to the in-process app."""
    found = Client("http://testserver")
    found.http = api
    return found


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)  # no SQL of its own
def test_the_client_sends_labels_terms_and_the_idempotency_key(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REVIEWSCORE_STATE_DIR", str(tmp_path / "state"))
    path = tmp_path / "reviews.csv"
    path.write_text(REVIEWS)
    asked: dict[str, Any] = {
        "labels": {"team": "search", "run": "7"},
        "deadline": "2h",
        "results_expire_after": "7d",
        "max_failed_fraction": 0.25,
        "idempotency_key": "nightly-7",
    }
    one = client.submit(path, parallel=0, **asked)
    assert one["metadata"] == {"team": "search", "run": "7"}
    assert (one["max_failed_fraction"], one["results_expire_after_s"]) == (0.25, 7 * 86400)
    assert one["deadline_at"] is not None
    assert client.submit(path, parallel=0, **asked)["id"] == one["id"]
    in_parts = client.submit(path, parallel=1, **(asked | {"idempotency_key": "parts-7"}))
    assert in_parts["in_parts"] and in_parts["metadata"] == one["metadata"]
    assert [j["id"] for j in client.jobs(labels={"team": "search"})["jobs"]] == [
        in_parts["id"],
        one["id"],
    ]
    assert client.jobs(labels={"team": "ads"})["total"] == 0


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)  # no SQL of its own
def test_the_cli_filters_jobs_by_label_and_refuses_a_label_without_equals(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from reviewscore.shell import cli

    monkeypatch.setattr(cli, "_client", lambda _url, _key: client)
    tagged = upload(client.http, REVIEWS, label="team:search")  # type: ignore[arg-type]
    upload(client.http, REVIEWS)  # type: ignore[arg-type]
    runner = CliRunner()
    listed = runner.invoke(cli.app, ["jobs", "--label", "team=search"])
    assert listed.exit_code == 0, listed.output
    assert tagged["id"] in listed.output and listed.output.count("queued") == 1
    path = tmp_path / "r.csv"
    path.write_text(REVIEWS)
    refused = runner.invoke(cli.app, ["score", str(path), "-o", "x.csv", "--label", "team"])
    assert isinstance(refused.exception, ClientError)
    assert "--label 'team' is not key=value" in str(refused.exception)
