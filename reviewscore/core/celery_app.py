"""The Celery app shared by the API (which only sends tasks by name) and the workers."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import timedelta
from typing import Any

from celery import Celery
from kombu import Queue, serialization

from reviewscore.core import redis_keys, redis_transport
from reviewscore.core.messages import WorkerReport
from reviewscore.core.settings import Settings, get_settings

# Before any connection is made: redis:// URLs get the transport that survives a Redis restart.
redis_transport.install()

SCORE_CHUNK = "reviewscore.score_chunk"
SCORE_TEXTS = "reviewscore.score_texts"
SWEEP = "reviewscore.sweep"
DELIVER_RESULTS = "reviewscore.deliver_results"
TRAIN_MODEL = "reviewscore.train_model"
# The module of the training task, imported by each worker when it starts (by name: neither
# core nor worker/ may import training/; it loads TensorFlow only inside the task).
TRAINING_TASKS = "training.tasks"

BULK_QUEUE = "bulk"
SINGLES_QUEUE = "singles"
# Redis emulates priorities with one list per step; 0 is served first.
PRIORITY_STEPS = list(range(10))


def chunk_priority(seq: int) -> int:
    """Early chunks of every job go first, so a small job is not stuck behind a big one."""
    return min(9, (seq + 1).bit_length() - 1)


def make_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    app = Celery(
        "reviewscore",
        broker=settings.broker_url,
        backend=settings.broker_url,
        include=[TRAINING_TASKS],
    )
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # Pool processes per worker node, so a plain `celery -A worker.tasks worker` (compose,
        # another host) follows REVIEWSCORE_WORKER_CONCURRENCY as `make run` does; -c still wins.
        worker_concurrency=settings.worker_processes,
        # Each pool process loads TensorFlow and the model before it reports up; Celery's 4 s
        # default killed slow starters, so a replacement for a crashed process could loop forever.
        worker_proc_alive_timeout=180,
        task_ignore_result=True,
        result_expires=timedelta(minutes=10),
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "priority_steps": PRIORITY_STEPS,
            "sep": ":",
            "queue_order_strategy": "priority",
            # Far above the longest chunk, so Redis never re-delivers a chunk still being scored.
            "visibility_timeout": 3600,
            # A hung Redis (SIGSTOP, a dead host) fails a call after this long instead of
            # blocking it forever; above the transport's 1 s BRPOP, so idle polling is unaffected.
            "socket_timeout": settings.redis_timeout_s,
            "socket_connect_timeout": settings.redis_timeout_s,
        },
        result_backend_transport_options={"retry_policy": {"timeout": 5.0}},
        task_queues=[Queue(SINGLES_QUEUE), Queue(BULK_QUEUE)],
        task_default_queue=BULK_QUEUE,
        task_routes={
            SCORE_CHUNK: {"queue": BULK_QUEUE},
            SCORE_TEXTS: {"queue": SINGLES_QUEUE},
            SWEEP: {"queue": BULK_QUEUE},
            DELIVER_RESULTS: {"queue": BULK_QUEUE},
            TRAIN_MODEL: {"queue": BULK_QUEUE},
        },
        worker_send_task_events=True,
        task_send_sent_event=True,
        beat_schedule={
            "sweep": {
                "task": SWEEP,
                "schedule": settings.sweep_interval_s,
                "options": {
                    "queue": BULK_QUEUE,
                    "priority": 0,
                    "expires": settings.sweep_interval_s,
                },
            }
        },
    )
    return app


celery_app = make_celery()


def enqueue_chunk(job_id: str, seq: int) -> None:
    celery_app.send_task(
        SCORE_CHUNK, args=[job_id, seq], queue=BULK_QUEUE, priority=chunk_priority(seq)
    )


def enqueue_delivery(job_id: str) -> None:
    """Sends a finished job's results to its result_url (core/delivery.py), from a worker."""
    celery_app.send_task(DELIVER_RESULTS, args=[job_id], queue=BULK_QUEUE, priority=0)


def enqueue_training(run_id: str) -> None:
    """Trains a model from a user's labels (core/training_runs.py) on a worker."""
    celery_app.send_task(TRAIN_MODEL, args=[run_id], queue=BULK_QUEUE, priority=0)


def singles_message(
    texts: list[str], model: str | None, *, batch: str, reply_to: str, awaited_key: str
) -> bytes:
    """One micro-batch of POST /v1/score as a Celery task message (built by Celery), wrapped as
    kombu's Redis transport stores it, ready to LPUSH onto SINGLES_QUEUE: the API pushes it
    through redis.asyncio, so no thread or blocking client sits on its event loop.
    tests/test_singles_message.py holds it equal to what kombu itself publishes.

    The answer goes to the `reply_to` list (reviewscore.core.replies), not the result backend;
    no task-sent event (the task sends no events either, so Flower would show it stuck in SENT);
    no texts in argsrepr. No `expires` either: Celery would compare the API host's clock with
    the worker host's; the worker asks Redis whether `awaited_key` still exists instead
    (core/replies.py), so lateness is judged on one clock."""
    message = celery_app.amqp.create_task_message(
        batch,
        SCORE_TEXTS,
        [texts, model],
        {"reply_to": reply_to, "batch": batch, "awaited_key": awaited_key},
        ignore_result=True,
        argsrepr=f"[{len(texts)} texts, {model!r}]",
        kwargsrepr="{}",
    )
    content_type, content_encoding, body = serialization.dumps(message.body, serializer="json")
    raw = body.encode(content_encoding) if isinstance(body, str) else body
    envelope = {
        "body": base64.b64encode(raw).decode("ascii"),
        "content-encoding": content_encoding,
        "content-type": content_type,
        "headers": message.headers,
        "properties": {
            **message.properties,
            "delivery_mode": 2,
            # The default exchange: routed by queue name, as Celery sends to a direct queue.
            "delivery_info": {"exchange": "", "routing_key": SINGLES_QUEUE},
            "priority": 0,  # priority 0 lives in the list named like the queue
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return json.dumps(envelope).encode()


def priority_lists(queue: str) -> list[str]:
    """The Redis lists that hold a queue's messages, one per priority step (kombu's naming)."""
    return [queue] + [f"{queue}:{step}" for step in PRIORITY_STEPS[1:]]


def queue_depth(queue: str) -> int:
    """Messages waiting in a queue, across its priority lists."""
    with celery_app.connection_for_read() as conn:
        client = conn.default_channel.client
        return sum(int(client.llen(name)) for name in priority_lists(queue))


WORKER_KEY_PREFIX = redis_keys.WORKER_PREFIX


def report_worker(process: str, report: WorkerReport, ttl_s: int = 24 * 3600) -> None:
    """Called by each worker process once it has loaded its model (or failed to), for /readyz:
    {"device": "CPU:0", "models": {"nbsvm": "nbsvm-a51c0e948bd9"}, "error": null}."""
    with celery_app.connection_for_write() as conn:
        conn.default_channel.client.set(
            WORKER_KEY_PREFIX + process, report.model_dump_json(), ex=ttl_s
        )


def forget_worker(process: str) -> None:
    with celery_app.connection_for_write() as conn:
        conn.default_channel.client.delete(WORKER_KEY_PREFIX + process)


def reported_workers(client: Any = None) -> dict[str, WorkerReport]:
    """Worker process ("<node>@<host>:<pid>") -> its last reported state. `client`: a redis-py
    client of the caller's own (short timeouts, as /metrics uses) instead of Celery's connection."""
    if client is not None:
        return _decode_reports(client)
    with celery_app.connection_for_read() as conn:
        return _decode_reports(conn.default_channel.client)


def _decode_reports(client: Any) -> dict[str, WorkerReport]:
    keys = list(client.scan_iter(match=WORKER_KEY_PREFIX + "*", count=100))
    values = client.mget(keys) if keys else []
    found: dict[str, WorkerReport] = {}
    for key, value in zip(keys, values, strict=True):
        if value is None:
            continue
        name = (key.decode() if isinstance(key, bytes) else key)[len(WORKER_KEY_PREFIX) :]
        try:
            found[name] = WorkerReport.model_validate_json(value)
        except ValueError:  # pydantic's ValidationError is one: a report of another version
            continue
    return found


def reported_devices() -> dict[str, str]:
    """Worker process -> scoring device, for the processes whose model loaded."""
    return {
        name: str(report.device)
        for name, report in reported_workers().items()
        if report.state == "ready"
    }
