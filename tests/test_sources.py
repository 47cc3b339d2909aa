"""POST /v1/jobs with a source_url, in-process (FastAPI's TestClient) on real SQLite and
PostgreSQL, the file served by a real nginx and the chunk task run here on the stub scorer."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from reviewscore.core.settings import get_settings
from tests import factories as f
from tests.inprocess import work_off
from tests.test_routes import REVIEWS
from tests.webserver import WebServer, webserver

__all__ = ["webserver"]  # a fixture, imported to be used here

pytestmark = pytest.mark.usefixtures("database")


@pytest.fixture
def api(
    sent: list[tuple[str, int]],
    webserver: WebServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[TestClient]:
    monkeypatch.setenv("REVIEWSCORE_CHUNK_SIZE", "4")
    monkeypatch.setenv("REVIEWSCORE_URL_ALLOW", f"{webserver.url}/files/")
    monkeypatch.setenv("REVIEWSCORE_VAR_DIR", str(tmp_path / "var"))
    get_settings.cache_clear()
    with TestClient(create_app()) as client:
        yield client
    get_settings.cache_clear()


def test_a_source_url_in_the_query_becomes_a_job_with_the_files_rows(
    api: TestClient, sent: list[tuple[str, int]], webserver: WebServer, stub_model: f.StubScorer
) -> None:
    (webserver.root / "reviews.csv").write_text(REVIEWS)
    answer = api.post(
        "/v1/jobs",
        params={"source_url": f"{webserver.url}/files/reviews.csv?sig=x", "id_column": "id"},
    )
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert (job["filename"], job["received"], job["total"]) == ("reviews.csv", 10, 10)
    assert job["source_url"] == f"{webserver.url}/files/reviews.csv?..."
    work_off(sent)
    done = api.get(f"/v1/jobs/{job['id']}").json()
    assert (done["status"], done["scored"]) == ("succeeded", 10)
    results = list(csv.DictReader(io.StringIO(api.get(done["results_url"]).text)))
    assert [r["id"] for r in results] == [f"r{i}" for i in range(1, 11)]
    spool = get_settings().var_dir / "spool"
    assert not spool.exists() or list(spool.iterdir()) == [], "the fetched file is deleted"


def test_a_json_body_names_the_source_and_its_options(
    api: TestClient, webserver: WebServer
) -> None:
    (webserver.root / "r.csv").write_text("key,body\nk1,good film\nk2,bad film\n")
    answer = api.post(
        "/v1/jobs",
        json={
            "source_url": f"{webserver.url}/files/r.csv",
            "text_column": "body",
            "id_column": "key",
            "filename": "dump.csv",
        },
    )
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert (job["text_column"], job["id_column"], job["filename"]) == ("body", "key", "dump.csv")
    assert job["received"] == 2


def test_a_source_url_outside_the_allow_list_is_422_without_its_query_and_no_job(
    api: TestClient, webserver: WebServer
) -> None:
    answer = api.post("/v1/jobs", json={"source_url": f"{webserver.url}/other/r.csv?sig=s3cret"})
    assert answer.status_code == 422
    assert "REVIEWSCORE_URL_ALLOW" in answer.json()["detail"]
    assert "s3cret" not in answer.text
    assert webserver.requests() == []
    assert api.get("/v1/jobs").json()["total"] == 0


def test_a_missing_source_is_422_naming_its_answer(api: TestClient, webserver: WebServer) -> None:
    answer = api.post("/v1/jobs", params={"source_url": f"{webserver.url}/files/none.csv"})
    assert answer.status_code == 422
    assert answer.json()["detail"] == f"{webserver.url}/files/none.csv: answered 404 Not Found"


def test_a_body_and_a_source_url_together_are_refused(
    api: TestClient, webserver: WebServer
) -> None:
    answer = api.post(
        "/v1/jobs",
        params={"source_url": f"{webserver.url}/files/r.csv"},
        content=REVIEWS.encode(),
        headers={"Content-Type": "text/csv"},
    )
    assert answer.status_code == 400 and "both a body and a source_url" in answer.json()["detail"]
    unknown = api.post("/v1/jobs", json={"source_url": f"{webserver.url}/files/r.csv", "x": 1})
    assert unknown.status_code == 422 and "JSON body, x" in unknown.json()["detail"]
    assert webserver.requests() == []


def test_a_refused_result_url_fails_before_the_source_is_fetched(
    api: TestClient, webserver: WebServer
) -> None:
    (webserver.root / "r.csv").write_text(REVIEWS)
    answer = api.post(
        "/v1/jobs",
        json={
            "source_url": f"{webserver.url}/files/r.csv",
            "result_url": "http://127.0.0.1:9/out.csv?sig=s3cret",
        },
    )
    assert answer.status_code == 422 and "REVIEWSCORE_URL_ALLOW" in answer.json()["detail"]
    assert "s3cret" not in answer.text
    assert webserver.requests() == []


def test_a_source_url_job_carries_its_labels(
    api: TestClient, sent: list[tuple[str, int]], webserver: WebServer, stub_model: f.StubScorer
) -> None:
    (webserver.root / "rated.csv").write_text("text,stars\ngood film,5\nbad film,1\nfine,4\n")
    answer = api.post(
        "/v1/jobs",
        json={
            "source_url": f"{webserver.url}/files/rated.csv",
            "label_column": "stars",
            "positive_from": 4,
        },
    )
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert (job["label_column"], job["positive_from"]) == ("stars", 4.0)
    work_off(sent)
    evaluation = api.get(f"/v1/jobs/{job['id']}/summary").json()["evaluation"]
    confusion = evaluation["confusion"]
    assert evaluation["rows"] == 3
    assert confusion["true_positive"] + confusion["false_negative"] == 2  # 5 and 4 stars
