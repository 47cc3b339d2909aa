"""Results delivered to a URL (result_url) against a real HTTP receiver on loopback: the file
PUT once the job is finished, retried after the receiver fails, shown on the job without the
URL's query string; a URL outside REVIEWSCORE_URL_ALLOW refused before anything is stored. And
the completion webhook (callback_url) sent by the real workers and sweeper (the rest of its
behaviour: tests/test_webhooks.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from tests.conftest import (
    RunningStack,
    free_port,
    sample_reviews,
    sqlite_stack,
    wait_for,
    write_csv,
)
from tests.test_webhooks import SECRET, Receiver

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The receiver answers its first PUT 503, as a store having a bad minute would."""
    folder = tmp_path_factory.mktemp("received")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.receiver", str(port), str(folder), "503"], cwd=REPO_ROOT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _up(url), 30, "the receiver")
        yield url, folder
    finally:
        process.kill()
        process.wait()


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=2).is_success
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def hooks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    """A webhook receiver that answers its first POST 500."""
    found = Receiver(tmp_path_factory.mktemp("hooks"))
    found.start("500")
    yield found
    found.stop()


@pytest.fixture(scope="module")
def stack(
    receiver: tuple[str, Path],
    hooks: Receiver,
    tmp_path_factory: pytest.TempPathFactory,
    models_dir: Path,
) -> Iterator[RunningStack]:
    env = {
        "REVIEWSCORE_URL_ALLOW": f"{receiver[0]}/results/,http://127.0.0.1:{hooks.port}/hooks/",
        "REVIEWSCORE_WEBHOOK_SECRET": SECRET,
        "REVIEWSCORE_WEBHOOK_BACKOFF_S": "0.5",
    }
    with sqlite_stack(tmp_path_factory.mktemp("var-delivery"), models_dir, env) as running:
        yield running


def delivered(stack: RunningStack, job_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        job: dict[str, Any] = stack.client.job(job_id)
        return job if job["delivered_at"] else None

    return wait_for(done, 90, f"the results of job {job_id} to be delivered")  # type: ignore[no-any-return]


def test_results_are_put_to_result_url_once_the_job_is_finished(
    stack: RunningStack, receiver: tuple[str, Path], tmp_path: Path
) -> None:
    base, folder = receiver
    rows = sample_reviews(120, seed=21)
    path = write_csv(tmp_path / "reviews.csv", rows, ["id", "text"])
    target = f"{base}/results/run-1.csv?X-Signature=s3cr3t"
    with stack.http() as http:
        job = http.post(
            "/v1/jobs",
            params={"id_column": "id", "result_url": target},
            content=path.read_bytes(),
            headers={"Content-Type": "text/csv"},
        ).json()
    job = delivered(stack, job["id"])
    # The receiver's first answer was a 503: the second try took it.
    assert job["delivery_attempts"] == 2 and job["delivery_error"] is None
    assert job["result_url"] == f"{base}/results/run-1.csv?..."
    assert "s3cr3t" not in json.dumps(job)
    with stack.http() as http:
        expected = http.get(f"/v1/jobs/{job['id']}/results").content
    assert (folder / "results_run-1.csv").read_bytes() == expected
    assert (folder / "results_run-1.csv.query").read_text() == "X-Signature=s3cr3t"
    assert (folder / "results_run-1.csv.type").read_text().startswith("text/csv")


def test_a_job_in_parts_delivers_json_lines(
    stack: RunningStack, receiver: tuple[str, Path]
) -> None:
    base, folder = receiver
    with stack.http() as http:
        job = http.post(
            "/v1/jobs",
            params={
                "parts": "true",
                "result_url": f"{base}/results/parts.jsonl",
                "result_format": "jsonl",
            },
        ).json()
        body = b"text\n" + b"".join(b"review number %d was fine\n" % i for i in range(50))
        assert http.put(f"/v1/jobs/{job['id']}/parts/1", content=body).status_code == 201
        assert http.post(f"/v1/jobs/{job['id']}/complete", json={"parts": 1}).status_code == 200
    delivered(stack, job["id"])
    lines = (folder / "results_parts.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [str(i) for i in range(1, 51)]


def test_a_result_url_outside_the_allow_list_is_refused_before_anything_is_stored(
    stack: RunningStack, receiver: tuple[str, Path], tmp_path: Path
) -> None:
    base, _ = receiver
    path = write_csv(tmp_path / "reviews.csv", sample_reviews(10, seed=22), ["id", "text"])
    before = stack.client.jobs()["total"]
    for url, reason in (
        (f"{base}/elsewhere/x.csv", "does not start with any prefix in REVIEWSCORE_URL_ALLOW"),
        ("http://169.254.169.254/results/x", "does not start with any prefix"),
    ):
        with stack.http() as http:
            answer = http.post(
                "/v1/jobs",
                params={"result_url": url},
                content=path.read_bytes(),
                headers={"Content-Type": "text/csv"},
            )
        assert answer.status_code == 422 and reason in answer.json()["detail"]
    assert stack.client.jobs()["total"] == before


def test_the_workers_post_a_signed_webhook_and_the_sweeper_retries_it_after_a_500(
    stack: RunningStack, hooks: Receiver, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "reviews.csv", sample_reviews(60, seed=23), ["id", "text"])
    job = stack.client.submit(path, id_column="id", callback_url=hooks.url, wait=False)

    def delivered() -> dict[str, Any] | None:
        found: dict[str, Any] = stack.client.deliveries(job["id"])
        return found if found["event"] and found["event"]["state"] == "delivered" else None

    found = wait_for(delivered, 90, "the webhook to be taken")
    assert [a["status_code"] for a in found["attempts"]] == [500, 200]
    first, last = hooks.requests()
    assert first["headers"]["webhook-id"] == last["headers"]["webhook-id"] == found["event"]["id"]
    payload = Webhook(SECRET).verify(last["body"], last["headers"])
    assert payload["type"] == "job.succeeded"
    assert payload["data"]["id"] == job["id"] and payload["data"]["scored"] == 60
    assert payload["data"]["summary"]["rows"] == 60
