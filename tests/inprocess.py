"""The fixtures of the in-process layer (the API under FastAPI's TestClient, the worker's chunk
task run in the test's own process): chunk messages kept instead of sent to Redis, the worker's
model replaced by the stub scorer (it stands for a Keras model: same interface, scores derived
from the text), and `work_off`, which runs the chunk task for each message as a worker would.
Registered for every test module by tests/conftest.py (`pytest_plugins`)."""

from __future__ import annotations

import pytest

from tests import factories as f


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """The chunk messages the API sends, kept instead of going to Redis. A finished job's
    results delivery is not queued either: with no Redis here, Celery would retry for 5 s."""
    from api import uploads

    messages: list[tuple[str, int]] = []
    monkeypatch.setattr(uploads, "enqueue_chunk", lambda job, seq: messages.append((job, seq)))
    monkeypatch.setattr("worker.tasks.enqueue_delivery", lambda _job_id: None)
    return messages


@pytest.fixture
def stub_model(monkeypatch: pytest.MonkeyPatch) -> f.StubScorer:
    """The worker's model replaced by the stub; jobs are pinned to the published stub version."""
    from reviewscore.core.db import session_scope
    from reviewscore.core.model_registry import get_model
    from worker import tasks

    with session_scope(readonly=True) as session:
        published = get_model(session, "stub")
    scorer = f.StubScorer(version=published.version)
    monkeypatch.setattr(tasks, "get_scorer", lambda _name, _version=None: scorer)
    return scorer


def work_off(messages: list[tuple[str, int]]) -> None:
    """Runs the chunk task for every message sent, as a worker would."""
    from worker import tasks
    from worker.lease import LeaseKeeper

    while messages:
        job_id, seq = messages.pop(0)
        work = f.claim(job_id, seq)
        if work is not None:
            with LeaseKeeper(work, lease_s=60) as keeper:
                tasks._score_and_write(work, 0.0, keeper)
