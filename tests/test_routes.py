"""The HTTP API in-process (FastAPI's TestClient) on real SQLite and PostgreSQL, with the worker's
chunk task run in the same process on a stub scorer: the fast layer under the real-process
suites. What is checked is what a client sees: the job view, ids as sent, counts as rows."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime

import pytest
from fastapi.testclient import TestClient

from api import uploads
from api.main import create_app
from tests import factories as f
from worker import tasks

pytestmark = pytest.mark.usefixtures("database")


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """The chunk messages the API sends, kept instead of going to Redis."""
    messages: list[tuple[str, int]] = []
    monkeypatch.setattr(uploads, "enqueue_chunk", lambda job, seq: messages.append((job, seq)))
    return messages


@pytest.fixture
def api(sent: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("REVIEWSCORE_CHUNK_SIZE", "4")
    from reviewscore.core.settings import get_settings

    get_settings.cache_clear()
    with TestClient(create_app()) as client:
        yield client
    get_settings.cache_clear()


@pytest.fixture
def stub_model(monkeypatch: pytest.MonkeyPatch) -> f.StubScorer:
    """The worker's model replaced by the stub; jobs are pinned to the published stub version."""
    from reviewscore.core.db import session_scope
    from reviewscore.core.model_registry import get_model

    with session_scope(readonly=True) as session:
        published = get_model(session, "stub")
    scorer = f.StubScorer(version=published.version)
    monkeypatch.setattr(tasks, "get_scorer", lambda _name, _version=None: scorer)
    return scorer


def work_off(messages: list[tuple[str, int]]) -> None:
    """Runs the chunk task for every message sent, as a worker would."""
    while messages:
        job_id, seq = messages.pop(0)
        work = f.claim(job_id, seq)
        if work is not None:
            tasks._score_and_write(work, 0.0)


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
