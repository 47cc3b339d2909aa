"""Ingest design (b) as a client sees it, in-process on real SQLite and PostgreSQL with the
chunk task run here on the stub scorer: an upload of text rows is stored as one blob per chunk
and no row of its own; the worker that scores a chunk parses it; what a user downloads is the
same as when the API parses every row (REVIEWSCORE_INGEST_PARSE=api), before scoring, after,
and for rows a cancel left unscored."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.main import create_app
from reviewscore.core.chunk_texts import unpack_texts
from reviewscore.core.db import session_scope
from reviewscore.core.schema import ChunkText, InputRow
from reviewscore.core.settings import get_settings
from tests import factories as f
from tests.inprocess import work_off

pytestmark = pytest.mark.usefixtures("database")

# Ids as sent, a quoted line break, a row error (empty text), a kept column.
DUMP = (
    "id,text,stars\n"
    + "".join(f"r{i},review number {i} is fine,{i % 5}\n" for i in range(1, 9))
    + 'r9,"two\nlines, quoted",3\nr10,,1\n'
)


def client(monkeypatch: pytest.MonkeyPatch, parse: str) -> TestClient:
    monkeypatch.setenv("REVIEWSCORE_CHUNK_SIZE", "4")
    monkeypatch.setenv("REVIEWSCORE_INGEST_PARSE", parse)
    get_settings.cache_clear()
    return TestClient(create_app())


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch, sent: list[tuple[str, int]]) -> Iterator[TestClient]:
    with client(monkeypatch, "worker") as c:
        yield c
    get_settings.cache_clear()


def upload(api: TestClient, **params: str) -> str:
    answer = api.post(
        "/v1/jobs",
        params={"id_column": "id", "keep_columns": "stars", **params},
        files={"file": ("reviews.csv", DUMP.encode(), "text/csv")},
    )
    assert answer.status_code == 202, answer.text
    assert answer.json()["received"] == 10
    return str(answer.json()["id"])


def results(api: TestClient, job_id: str) -> list[dict[str, str]]:
    answer = api.get(f"/v1/jobs/{job_id}/results", params={"partial": "true"})
    assert answer.status_code == 200, answer.text
    return list(csv.DictReader(io.StringIO(answer.text)))


def stored(job_id: str) -> tuple[int, int]:
    """(input rows, chunk blobs) the database holds for the job."""
    with session_scope(readonly=True) as session:
        inputs = session.scalar(select(func.count()).where(InputRow.job_id == job_id))
        blobs = session.scalar(select(func.count()).where(ChunkText.job_id == job_id))
    return int(inputs or 0), int(blobs or 0)


def test_an_upload_is_stored_as_one_blob_a_chunk_and_lists_every_id_before_it_is_scored(
    api: TestClient, sent: list[tuple[str, int]], stub_model: f.StubScorer
) -> None:
    job_id = upload(api)
    assert stored(job_id) == (0, 3)  # 10 rows in chunks of 4: three blobs, no row of their own
    before = results(api, job_id)
    assert [r["id"] for r in before] == [f"r{i}" for i in range(1, 11)]
    assert {r["error"] for r in before[:9]} == {"not scored yet"}
    assert before[9]["error"] == "empty text"
    assert [r["stars"] for r in before[:3]] == ["1", "2", "3"]
    work_off(sent)
    assert stored(job_id) == (10, 0)  # parsed by the worker; the blobs dropped once scored
    after = results(api, job_id)
    assert [r["id"] for r in after] == [f"r{i}" for i in range(1, 11)]
    assert all(r["p_positive"] for r in after[:9]) and after[9]["error"] == "empty text"
    assert api.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"


def test_what_a_user_downloads_is_the_same_whoever_parses_the_rows(
    monkeypatch: pytest.MonkeyPatch, sent: list[tuple[str, int]], stub_model: f.StubScorer
) -> None:
    downloads = {}
    for parse in ("api", "worker"):
        with client(monkeypatch, parse) as api:
            job_id = upload(api)
            work_off(sent)
            downloads[parse] = results(api, job_id)
    get_settings.cache_clear()
    assert downloads["worker"] == downloads["api"]
    assert len(downloads["api"]) == 10


def test_rows_a_cancel_left_unscored_are_still_listed_with_their_ids(
    api: TestClient, sent: list[tuple[str, int]], stub_model: f.StubScorer
) -> None:
    job_id = upload(api)
    work_off(sent[:1])
    del sent[:]
    assert api.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    rows = results(api, job_id)
    assert [r["id"] for r in rows] == [f"r{i}" for i in range(1, 11)]
    assert [bool(r["p_positive"]) for r in rows] == [True] * 4 + [False] * 6


def test_a_job_that_keeps_its_texts_keeps_them_readable_once_scored(
    api: TestClient, sent: list[tuple[str, int]], stub_model: f.StubScorer
) -> None:
    job_id = upload(api, keep_texts="true")
    work_off(sent)
    with session_scope(readonly=True) as session:
        blobs = session.scalars(
            select(ChunkText.data).where(ChunkText.job_id == job_id).order_by(ChunkText.seq)
        ).all()
    texts = [text for blob in blobs for text in unpack_texts(blob)]
    assert texts[8] == "two\nlines, quoted" and texts[9] == ""
    assert len(texts) == 10
