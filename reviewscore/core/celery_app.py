"""The Celery app shared by the API (which only sends tasks by name) and the workers."""

from __future__ import annotations

from datetime import timedelta

from celery import Celery
from kombu import Queue

from reviewscore.core import redis_transport
from reviewscore.core.settings import Settings, get_settings

# Before any connection is made: redis:// URLs get the transport that survives a Redis restart.
redis_transport.install()

SCORE_CHUNK = "reviewscore.score_chunk"
SCORE_TEXTS = "reviewscore.score_texts"
SWEEP = "reviewscore.sweep"

BULK_QUEUE = "bulk"
SINGLES_QUEUE = "singles"
# Redis emulates priorities with one list per step; 0 is served first.
PRIORITY_STEPS = list(range(10))


def chunk_priority(seq: int) -> int:
    """Early chunks of every job go first, so a small job is not stuck behind a big one."""
    return min(9, (seq + 1).bit_length() - 1)


def make_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    app = Celery("reviewscore", broker=settings.broker_url, backend=settings.broker_url)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
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


def queue_depth(queue: str) -> int:
    """Messages waiting in a queue, across its priority lists."""
    with celery_app.connection_for_read() as conn:
        client = conn.default_channel.client
        names = [queue] + [f"{queue}:{step}" for step in PRIORITY_STEPS[1:]]
        return sum(int(client.llen(name)) for name in names)


DEVICE_KEY_PREFIX = "reviewscore:device:"


def report_device(process: str, device: str, ttl_s: int = 24 * 3600) -> None:
    """Called by each worker process once its model is loaded, for /readyz to show."""
    with celery_app.connection_for_write() as conn:
        conn.default_channel.client.set(DEVICE_KEY_PREFIX + process, device, ex=ttl_s)


def forget_device(process: str) -> None:
    with celery_app.connection_for_write() as conn:
        conn.default_channel.client.delete(DEVICE_KEY_PREFIX + process)


def reported_devices() -> dict[str, str]:
    with celery_app.connection_for_read() as conn:
        client = conn.default_channel.client
        keys = list(client.scan_iter(match=DEVICE_KEY_PREFIX + "*", count=100))
        values = client.mget(keys) if keys else []
    return {
        (k.decode() if isinstance(k, bytes) else k)[len(DEVICE_KEY_PREFIX) :]: (
            v.decode() if isinstance(v, bytes) else str(v)
        )
        for k, v in zip(keys, values, strict=True)
        if v is not None
    }
