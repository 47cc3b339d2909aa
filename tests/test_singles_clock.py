"""POST /v1/score when a worker host's wall clock has jumped (found by the chaos soak): whether a
batch is late is judged on Redis's clock, not the API's or the worker's, so a worker an hour
ahead still answers, and one an hour behind does not score batches whose caller gave up.

The worker's clock is shifted by tests/clock_offset/sitecustomize.py (time.time and
datetime.now, in that process only; the monotonic clock stays true, as under libfaketime)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningStack, sqlite_stack, wait_for

SINGLES_TIMEOUT_S = 6
CLOCK_OFFSET_DIR = Path(__file__).parent / "clock_offset"
HOUR_S = 3600


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[RunningStack]:
    env = {"REVIEWSCORE_SINGLES_TIMEOUT_S": str(SINGLES_TIMEOUT_S)}
    with sqlite_stack(tmp_path_factory.mktemp("var-clock"), models_dir, env) as running:
        yield running


def start_worker_with_clock(stack: RunningStack, offset_s: float) -> None:
    """Replaces the stack's worker with one (a single pool process) whose wall clock reads
    `offset_s` seconds off; returns once it has loaded its model and /readyz says ready."""
    runner = stack.stack
    runner.stop_child("worker")
    log_path = runner.log_dir / "worker.log"
    start = log_path.stat().st_size if log_path.exists() else 0
    shared_env = runner.extra_env
    runner.extra_env = {
        **shared_env,
        "PYTHONPATH": str(CLOCK_OFFSET_DIR),
        "REVIEWSCORE_TEST_CLOCK_OFFSET_S": str(offset_s),
    }
    try:
        runner.spawn("worker", runner.worker_args("worker", concurrency=1))
    finally:
        runner.extra_env = shared_env

    def its_log() -> str:
        with log_path.open("rb") as f:
            f.seek(start)
            return f.read().decode(errors="replace")

    # Its own line, not a report the stopped worker left in Redis.
    wait_for(lambda: "loaded model" in its_log(), 240, "the new worker to load its model")
    runner.wait_ready(timeout=60)
    # Celery's log lines carry the worker's own idea of the time: the shift took.
    stamps = re.findall(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),", its_log(), re.M)
    assert stamps, f"no time stamps in {log_path}"
    seen = datetime.strptime(stamps[-1], "%Y-%m-%d %H:%M:%S")
    assert abs(seen - (datetime.now() + timedelta(seconds=offset_s))) < timedelta(minutes=5)


def late_batches(stack: RunningStack) -> float:
    page = httpx.get(f"{stack.url}/metrics", timeout=30).text
    match = re.search(r"^reviewscore_singles_batches_late_total (\S+)$", page, re.M)
    assert match, "reviewscore_singles_batches_late_total not in /metrics"
    return float(match.group(1))


def score_timed(stack: RunningStack) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    with stack.http() as http:
        response = http.post("/v1/score", json={"reviews": ["A fine film.", "Dull and long."]})
    return response, time.monotonic() - started


def test_a_worker_whose_clock_jumped_an_hour_ahead_answers_singles(stack: RunningStack) -> None:
    start_worker_with_clock(stack, +HOUR_S)
    response, took = score_timed(stack)
    assert response.status_code == 200, response.text
    assert took < SINGLES_TIMEOUT_S
    first, second = response.json()["results"]
    assert first["label"] == "positive" and second["label"] == "negative"


def test_a_worker_an_hour_behind_answers_and_skips_batches_whose_caller_gave_up(
    stack: RunningStack,
) -> None:
    stack.stack.stop_child("worker")
    late_before = late_batches(stack)
    # No worker: the caller gets its 504 and stops waiting; its batch stays queued.
    response, _ = score_timed(stack)
    assert response.status_code == 504, response.text

    start_worker_with_clock(stack, -HOUR_S)
    response, took = score_timed(stack)
    assert response.status_code == 200, response.text
    assert took < SINGLES_TIMEOUT_S
    # The abandoned batch came first in the queue: it was taken, and not scored.
    assert late_batches(stack) == late_before + 1
