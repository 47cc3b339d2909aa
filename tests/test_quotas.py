"""Quotas per API key, in-process (FastAPI's TestClient) on real SQLite and PostgreSQL with auth
on: past its rows queued or its unfinished jobs a key's next upload is 429 with Retry-After and a
message naming the quota, the key's use and the limit; GET /v1/usage shows both; a key's own
quota (`reviewscore keys set-quota`) wins over the default."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.main import create_app
from reviewscore.client import Client
from reviewscore.core import keys
from reviewscore.core.db import session_scope
from reviewscore.shell.cli import app as cli
from tests import factories as f
from worker import tasks
from worker.lease import LeaseKeeper

pytestmark = pytest.mark.usefixtures("database")
TEN_ROWS = ("id,text\n" + "".join(f"r{i},review number {i}\n" for i in range(10))).encode()


@pytest.fixture
def api(sent: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    from reviewscore.core.settings import get_settings

    monkeypatch.setenv("REVIEWSCORE_ENV", "production")
    monkeypatch.setenv("REVIEWSCORE_CHUNK_SIZE", "5")
    monkeypatch.setenv("REVIEWSCORE_KEY_MAX_QUEUED_ROWS", "15")
    monkeypatch.setenv("REVIEWSCORE_KEY_MAX_UNFINISHED_JOBS", "3")
    monkeypatch.setenv("REVIEWSCORE_QUOTA_RETRY_AFTER_S", "7")
    get_settings.cache_clear()
    with TestClient(create_app()) as client:
        yield client
    get_settings.cache_clear()


def new_key(name: str) -> dict[str, str]:
    with session_scope() as s:
        _, key = keys.create_key(s, name)
    return {"Authorization": f"Bearer {key}"}


def upload(api: TestClient, key: dict[str, str], **params: str) -> tuple[int, dict, str]:  # type: ignore[type-arg]
    response = api.post(
        "/v1/jobs",
        headers=key,
        params=params,
        files={"file": ("reviews.csv", TEN_ROWS, "text/csv")},
    )
    return response.status_code, response.json(), response.headers.get("Retry-After", "")


def work_off(messages: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch) -> None:
    """Scores every queued chunk, as workers would, on the stub model."""
    from reviewscore.core.model_registry import get_model

    with session_scope(readonly=True) as session:
        scorer = f.StubScorer(version=get_model(session, "stub").version)
    monkeypatch.setattr(tasks, "get_scorer", lambda _name, _version=None: scorer)
    monkeypatch.setattr(tasks, "_deliver_soon", lambda _job_id: None)  # no Redis here
    while messages:
        messages.pop()
        work = f.chunks.claim_next(None, lease_s=60, max_attempts=3, worker="t:1", chunk_rows=5)
        if work is not None:
            with LeaseKeeper(work, lease_s=60) as keeper:
                tasks._score_and_write(work, 0.0, keeper)


def usage_command(api: TestClient, key: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    """`reviewscore usage` through the Python client, against the in-process app."""
    from reviewscore.shell import cli as cli_module

    client = Client("http://testserver")
    client.http = api  # a TestClient is an httpx.Client
    api.headers.update(key)
    monkeypatch.setattr(cli_module, "_client", lambda _url, _key: client)
    done = CliRunner().invoke(cli, ["usage"], env={"COLUMNS": "120"})
    assert done.exit_code == 0, done.output
    return " ".join(done.output.split())


def test_past_its_queued_rows_a_key_gets_429_naming_the_quota_its_use_and_the_limit(
    api: TestClient, sent: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    team_a, team_b = new_key("a"), new_key("b")
    assert upload(api, team_a, model="stub")[0] == 202  # 10 rows queued, under 15
    # Let in under the quota, an upload is stored whole: the key ends past it, nothing is cut.
    assert upload(api, team_a, model="stub")[0] == 202
    status, body, retry_after = upload(api, team_a, model="stub")
    assert (status, retry_after) == (429, "7")
    assert "queued rows" in body["detail"]
    assert "20 rows received and not yet scored" in body["detail"]
    assert "limit is 15" in body["detail"]
    # A job in parts is refused the same way, and so is a part while the key is past it.
    assert api.post("/v1/jobs", headers=team_a, params={"parts": "true"}).status_code == 429
    assert upload(api, team_b, model="stub")[0] == 202  # another key is not held up by a's use
    usage = api.get("/v1/usage", headers=team_a).json()
    assert (usage["queued_rows"], usage["unfinished_jobs"], usage["max_queued_rows"]) == (
        20,
        2,
        15,
    )
    shown = usage_command(api, team_a, monkeypatch)  # the CLI shows the same, via Client.usage()
    assert "rows queued │ 20 │ 15" in shown and "unfinished jobs │ 2 │ 3" in shown, shown
    work_off(sent, monkeypatch)  # scored: the rows leave the queue, and a may upload again
    assert api.get("/v1/usage", headers=team_a).json()["queued_rows"] == 0
    assert upload(api, team_a, model="stub")[0] == 202


def test_past_its_unfinished_jobs_a_key_gets_429_and_its_own_quota_wins(
    api: TestClient, sent: list[tuple[str, int]]
) -> None:
    team = new_key("a")
    created = [
        api.post("/v1/jobs", headers=team, params={"parts": "true"}).status_code for _ in range(3)
    ]
    assert created == [201, 201, 201]  # jobs in parts with no part yet: unfinished, no rows
    response = api.post("/v1/jobs", headers=team, params={"parts": "true"})
    assert (response.status_code, response.headers["Retry-After"]) == (429, "7")
    detail = response.json()["detail"]
    assert "unfinished jobs" in detail and "3 jobs not finished" in detail
    assert "limit is 3" in detail
    done = CliRunner().invoke(cli, ["keys", "set-quota", "1", "--unfinished-jobs", "5"])
    assert done.exit_code == 0, done.output
    assert api.post("/v1/jobs", headers=team, params={"parts": "true"}).status_code == 201
    usage = api.get("/v1/usage", headers=team).json()
    assert usage == {
        "key_id": 1,
        "queued_rows": 0,
        "unfinished_jobs": 4,
        "max_queued_rows": 15,
        "max_unfinished_jobs": 5,
        "weight": 1.0,
    }
    back = CliRunner().invoke(
        cli, ["keys", "set-quota", "1", "--unfinished-jobs", "default", "--weight", "2.5"]
    )
    assert back.exit_code == 0, back.output
    usage = api.get("/v1/usage", headers=team).json()
    assert (usage["max_unfinished_jobs"], usage["weight"]) == (3, 2.5)


def test_a_part_is_refused_while_its_key_is_past_its_queued_rows(api: TestClient) -> None:
    team = new_key("a")
    job = api.post("/v1/jobs", headers=team, params={"parts": "true", "model": "stub"}).json()
    put = "/v1/jobs/{}/parts/{}".format
    headers = team | {"Content-Type": "application/octet-stream"}
    assert api.put(put(job["id"], 1), headers=headers, content=TEN_ROWS).status_code == 201
    assert api.put(put(job["id"], 2), headers=headers, content=TEN_ROWS).status_code == 201
    refused = api.put(put(job["id"], 3), headers=headers, content=TEN_ROWS)
    assert refused.status_code == 429 and "limit is 15" in refused.json()["detail"]
    parts = api.get(f"/v1/jobs/{job['id']}/parts", headers=team).json()
    assert [p["number"] for p in parts["parts"]] == [1, 2]  # the stored parts are kept
