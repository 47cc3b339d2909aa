"""The API pushes a /v1/score micro-batch onto Redis itself (no thread, no blocking client):
the message it builds must be the one kombu would have published, so any Celery worker takes it.

Compared in-process against kombu's virtual transport (the in-memory one shares the envelope
code with the Redis one, which stores that same dict as JSON); the real-worker round trip is in
tests/test_singles.py."""

from __future__ import annotations

import base64
import json
from typing import Any

from kombu import Connection, Queue

from reviewscore.core import celery_app as app_module
from reviewscore.core.celery_app import SCORE_TEXTS, SINGLES_QUEUE, singles_message


def what_kombu_publishes(texts: list[str], model: str | None) -> dict[str, Any]:
    app = app_module.celery_app
    message = app.amqp.create_task_message(
        "batch-1",
        SCORE_TEXTS,
        [texts, model],
        {"reply_to": "replies:x", "batch": "batch-1", "awaited_key": "awaited:x"},
        ignore_result=True,
        argsrepr=f"[{len(texts)} texts, {model!r}]",
        kwargsrepr="{}",
    )
    with Connection("memory://") as conn:
        queue = Queue(SINGLES_QUEUE)
        producer = conn.Producer()
        app.amqp.send_task_message(producer, SCORE_TEXTS, message, queue=queue)
        stored: dict[str, Any] = conn.default_channel._get(SINGLES_QUEUE)
    return stored


def comparable(envelope: dict[str, Any]) -> dict[str, Any]:
    """The envelope without what differs by design on every message (tag, times, origin)."""
    out = json.loads(json.dumps(envelope))
    out["body"] = json.loads(base64.b64decode(out["body"]))
    del out["properties"]["delivery_tag"]
    out["headers"].pop("origin")
    return out


def test_the_singles_message_is_the_one_kombu_publishes() -> None:
    texts = ["A fine film.", "Dull, and \u00e9t\u00e9 \U0001f3ac too long."]
    ours = json.loads(
        singles_message(
            texts, "nbsvm", batch="batch-1", reply_to="replies:x", awaited_key="awaited:x"
        )
    )
    assert comparable(ours) == comparable(what_kombu_publishes(texts, "nbsvm"))
    assert ours["properties"]["delivery_tag"]
    # No wall-clock expiry for a worker to compare with its own clock (core/replies.py).
    assert ours["headers"]["expires"] is None
