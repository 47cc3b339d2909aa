"""Completion webhooks against a real receiver process (tests/receiver.py): the API
in-process on real SQLite and PostgreSQL, the chunk task run in this process on the stub scorer,
and the sender run as the sweeper runs it (webhooks.send_due). Signatures are checked with the
`standardwebhooks` package, an implementation independent of ours."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from api.main import create_app
from reviewscore.core import webhooks
from reviewscore.core.settings import get_settings
from tests import factories as f
from tests.conftest import free_port, wait_for
from tests.inprocess import work_off

pytestmark = pytest.mark.usefixtures("database")
REPO_ROOT = Path(__file__).resolve().parent.parent
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # base64 of 24 bytes
REVIEWS = "id,text\n" + "".join(f"r{i},review number {i} is fine\n" for i in range(1, 9))


class Receiver:
    """A receiver process on a port of its own, started when the test says so."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks/done"
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, answers: str = "") -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.receiver", str(self.port), str(self.folder)] + [answers],
            cwd=REPO_ROOT,
        )
        wait_for(self._up, 30, "the webhook receiver")

    def _up(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2).is_success
        except httpx.HTTPError:
            return False

    def requests(self) -> list[dict[str, Any]]:
        found = sorted(self.folder.glob("*.json"), key=lambda p: int(p.stem))
        return [json.loads(p.read_text()) for p in found]

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    folder = tmp_path / "received"
    folder.mkdir()
    found = Receiver(folder)
    yield found
    found.stop()


@pytest.fixture
def api(
    sent: list[tuple[str, int]], receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    monkeypatch.setenv("REVIEWSCORE_CHUNK_SIZE", "4")
    monkeypatch.setenv("REVIEWSCORE_URL_ALLOW", f"http://127.0.0.1:{receiver.port}/hooks/")
    monkeypatch.setenv("REVIEWSCORE_WEBHOOK_SECRET", SECRET)
    # A hanging receiver is given up on after 1 s; retries come at once (the backoff's shape
    # is webhooks.backoff_s's, tested on its own).
    monkeypatch.setenv("REVIEWSCORE_WEBHOOK_TIMEOUT_S", "1")
    monkeypatch.setenv("REVIEWSCORE_WEBHOOK_BACKOFF_S", "0.01")
    get_settings.cache_clear()
    with TestClient(create_app()) as client:
        yield client
    get_settings.cache_clear()


def submit(api: TestClient, headers: dict[str, str] | None = None, **params: str) -> Any:
    return api.post(
        "/v1/jobs",
        params=params,
        files={"file": ("reviews.csv", REVIEWS.encode(), "text/csv")},
        headers=headers or {},
    )


def deliveries(api: TestClient, job_id: str, headers: dict[str, str] | None = None) -> Any:
    answer = api.get(f"/v1/jobs/{job_id}/deliveries", headers=headers or {})
    assert answer.status_code == 200, answer.text
    return answer.json()


def sweep_until(
    api: TestClient, job_id: str, done: Any, what: str, headers: dict[str, str] | None = None
) -> Any:
    """Runs the sweeper's webhook step until `done(deliveries)` holds."""

    def check() -> Any:
        found = deliveries(api, job_id, headers)
        if done(found):
            return found
        webhooks.send_due(get_settings())
        return None

    return wait_for(check, 30, what, interval=0.05)


def verified(secret: str, request: dict[str, Any]) -> Any:
    """The payload, once the independent implementation accepts the signature."""
    return Webhook(secret).verify(request["body"], request["headers"])


def test_a_finished_job_posts_its_event_through_down_500_and_hang_until_a_200(
    api: TestClient, sent: list[tuple[str, int]], stub_model: f.StubScorer, receiver: Receiver
) -> None:
    job = submit(api, callback_url=receiver.url + "?token=abc").json()
    assert job["callback_url"] == receiver.url + "?..."
    assert deliveries(api, job["id"]) == {"job_id": job["id"], "event": None, "attempts": []}
    work_off(sent)
    # The first attempt, made as the job ends (webhooks.send_soon), finds nothing listening.
    first = wait_for(
        lambda: deliveries(api, job["id"])["attempts"] and deliveries(api, job["id"]),
        30,
        "a first attempt",
    )
    assert first["event"]["state"] == "pending" and first["attempts"][0]["status_code"] is None
    receiver.start("500,hang")
    found = sweep_until(
        api, job["id"], lambda d: d["event"]["state"] == "delivered", "the webhook to be taken"
    )
    attempts = found["attempts"]
    assert [a["status_code"] for a in attempts] == [None, 500, None, 200]
    assert [a["attempt"] for a in attempts] == [1, 2, 3, 4]
    assert "did not answer within 1 s" in attempts[2]["error"]
    assert found["event"]["attempts"] == 4 and found["event"]["error"] is None
    requests = receiver.requests()
    assert [r["answer"] for r in requests] == ["500", "hang", "200"]
    assert {r["headers"]["webhook-id"] for r in requests} == {found["event"]["id"]}
    assert len({r["body"] for r in requests}) == 1
    assert requests[0]["path"] == "/hooks/done?token=abc"
    payload = verified(SECRET, requests[-1])
    shown = api.get(f"/v1/jobs/{job['id']}").json()
    assert payload["type"] == "job.succeeded"
    assert payload["data"] == shown and payload["data"]["summary"]["rows"] == 8
    with pytest.raises(WebhookVerificationError):
        verified(webhooks.new_secret(), requests[-1])


def test_a_callback_url_outside_the_allow_list_or_on_a_private_host_is_refused(
    api: TestClient, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = api.get("/v1/jobs").json()["total"]
    refused = submit(api, callback_url="http://10.0.0.5/hooks/done")
    assert refused.status_code == 422
    assert "does not start with any prefix in REVIEWSCORE_URL_ALLOW" in refused.json()["detail"]
    # A host name is checked after lookup: localhost leads to a loopback address.
    monkeypatch.setenv("REVIEWSCORE_URL_ALLOW", f"http://localhost:{receiver.port}/hooks/")
    get_settings.cache_clear()
    refused = submit(api, callback_url=f"http://localhost:{receiver.port}/hooks/done")
    assert refused.status_code == 422 and "loopback" in refused.json()["detail"]
    monkeypatch.delenv("REVIEWSCORE_WEBHOOK_SECRET")
    monkeypatch.setenv("REVIEWSCORE_URL_ALLOW", f"http://127.0.0.1:{receiver.port}/hooks/")
    get_settings.cache_clear()
    refused = submit(api, callback_url=receiver.url)
    assert refused.status_code == 422 and "REVIEWSCORE_WEBHOOK_SECRET" in refused.json()["detail"]
    assert api.get("/v1/jobs").json()["total"] == before


def test_a_keys_jobs_are_signed_with_its_own_secret_and_go_to_its_default_url(
    api: TestClient,
    sent: list[tuple[str, int]],
    stub_model: f.StubScorer,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from reviewscore.core import keys
    from reviewscore.core.db import session_scope

    with session_scope() as session:
        record, key = keys.create_key(session, "team-a", callback_url=receiver.url)
        secret = record.webhook_secret
    assert secret is not None and secret.startswith("whsec_")
    monkeypatch.setenv("REVIEWSCORE_ENV", "production")
    get_settings.cache_clear()
    auth = {"Authorization": f"Bearer {key}"}
    job = submit(api, headers=auth).json()  # no callback_url: the key's
    assert job["callback_url"] == receiver.url
    assert api.post(f"/v1/jobs/{job['id']}/cancel", headers=auth).status_code == 200
    receiver.start()
    sweep_until(
        api,
        job["id"],
        lambda d: d["event"] and d["event"]["state"] == "delivered",
        "the key's webhook",
        auth,
    )
    (request,) = receiver.requests()
    assert verified(secret, request)["type"] == "job.cancelled"
    with pytest.raises(WebhookVerificationError):
        verified(SECRET, request)  # REVIEWSCORE_WEBHOOK_SECRET signs only jobs without a key


def test_an_event_left_by_a_process_that_died_is_sent_by_the_next_one(
    api: TestClient,
    sent: list[tuple[str, int]],
    stub_model: f.StubScorer,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The worker that finished the job dies before its first attempt: only the outbox row is left.
    monkeypatch.setattr(webhooks, "send_soon", lambda _job_id: None)
    job = submit(api, callback_url=receiver.url).json()
    work_off(sent)
    ((event_id,),) = [webhooks.due_events()]
    # A sender that claimed it and died holds it only until its lease runs out.
    assert webhooks.claim(event_id, lease_s=0.5)
    assert webhooks.send_due(get_settings()) == 0
    wait_for(webhooks.due_events, 30, "the dead sender's lease to run out")
    receiver.start()
    sweeper = subprocess.run(
        [
            sys.executable,
            "-c",
            "from reviewscore.core import webhooks; from reviewscore.core.settings import "
            "get_settings; print(webhooks.send_due(get_settings()))",
        ],
        cwd=REPO_ROOT,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sweeper.returncode == 0, sweeper.stderr
    assert sweeper.stdout.strip() == "1"
    found = deliveries(api, job["id"])
    assert found["event"]["state"] == "delivered"
    assert [a["status_code"] for a in found["attempts"]] == [200]
    (request,) = receiver.requests()
    assert request["headers"]["webhook-id"] == event_id
    assert verified(SECRET, request)["data"]["id"] == job["id"]


def test_an_event_is_given_up_once_its_retry_time_is_spent(
    api: TestClient,
    sent: list[tuple[str, int]],
    stub_model: f.StubScorer,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(webhooks, "send_soon", lambda _job_id: None)
    monkeypatch.setenv("REVIEWSCORE_WEBHOOK_RETRY_FOR_S", "0.001")
    get_settings.cache_clear()
    job = submit(api, callback_url=receiver.url).json()
    work_off(sent)
    found = sweep_until(api, job["id"], lambda d: d["attempts"], "the one attempt")  # never up
    assert found["event"]["state"] == "gave_up" and found["event"]["next_attempt_at"] is None
    assert found["event"]["error"].startswith("gave up after 1 attempt: ")
    assert webhooks.due_events() == []
    # Deleting the job deletes its event and attempts.
    assert api.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert api.get(f"/v1/jobs/{job['id']}/deliveries").status_code == 404
    from sqlalchemy import func, select

    from reviewscore.core.db import session_scope
    from reviewscore.core.schema import WebhookDelivery, WebhookEvent

    with session_scope(readonly=True) as session:
        for table in (WebhookEvent, WebhookDelivery):
            assert session.execute(select(func.count()).select_from(table)).scalar_one() == 0


def test_retries_back_off_exponentially_up_to_the_cap() -> None:
    settings = get_settings().model_copy(
        update={"webhook_backoff_s": 5.0, "webhook_backoff_max_s": 3600.0}
    )
    waits = [webhooks.backoff_s(n, settings) for n in range(1, 13)]
    assert waits[:4] == [5.0, 10.0, 20.0, 40.0] and waits[-1] == 3600.0
