"""The reply channel of POST /v1/score: each API process listens on one Redis list of its own;
a worker LPUSHes a micro-batch's answer onto the list named in the task, so the API waits on
one BLPOP per process instead of one result lookup per task.

Whether a batch is still worth scoring is judged on Redis's clock, never a host's: with each
batch the API sets a key whose TTL is its wait, and a worker scores the batch only while that
key exists. (Celery's `expires` would be stamped by the API's clock and compared with the
worker's: a worker whose clock jumped ahead dropped every batch, one behind scored batches
nobody waited for.)"""

from __future__ import annotations

import os
import secrets
import socket

import orjson
import redis

from reviewscore.core import redis_keys
from reviewscore.core.messages import SinglesAnswer

REPLY_KEY_PREFIX = redis_keys.REPLY_PREFIX
# Every push renews it: the list of an API process that died goes away by itself.
REPLY_TTL_S = 300
AWAITED_KEY_PREFIX = redis_keys.AWAITED_PREFIX


def new_reply_key() -> str:
    """A list name unique to this API process (host, pid and a random part for restarts)."""
    return f"{REPLY_KEY_PREFIX}{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def awaited_key(batch: str) -> str:
    """The key that exists while the API still waits for `batch` (set with its TTL by the API
    in the same pipeline as the task message, before it)."""
    return f"{AWAITED_KEY_PREFIX}{batch}"


def redis_url(broker_url: str) -> str:
    """The broker URL as redis-py spells it: kombu writes a Unix socket as redis+socket://."""
    for prefix in ("redis+socket://", "socket://"):
        if broker_url.startswith(prefix):
            return "unix://" + broker_url.removeprefix(prefix)
    return broker_url


def encode(batch: str, answer: SinglesAnswer) -> bytes:
    return orjson.dumps({"batch": batch, "answer": answer.model_dump()})


def decode(raw: bytes | str) -> tuple[str, SinglesAnswer]:
    reply = orjson.loads(raw)
    return str(reply["batch"]), SinglesAnswer.model_validate(reply["answer"])


_client: tuple[int, redis.Redis] | None = None


def _client_of_this_process(broker_url: str) -> redis.Redis:
    # One client per process, made after fork: a pool process must not share its parent's socket.
    global _client
    if _client is None or _client[0] != os.getpid():
        _client = (os.getpid(), redis.Redis.from_url(redis_url(broker_url), socket_timeout=10))
    return _client[1]


def push(broker_url: str, key: str, batch: str, answer: SinglesAnswer) -> None:
    """Called by the worker: hand one batch's answer to the API process waiting on `key`."""
    pipe = _client_of_this_process(broker_url).pipeline(transaction=False)
    pipe.lpush(key, encode(batch, answer))
    pipe.expire(key, REPLY_TTL_S)
    pipe.execute()


def still_awaited(broker_url: str, key: str) -> bool:
    """Called by the worker before it scores a batch: whether its API process still waits,
    i.e. the batch's key has not expired (Redis's clock). Redis unreachable: True, score it
    (the push of the answer then fails or not, as it would have)."""
    try:
        return bool(_client_of_this_process(broker_url).exists(key))
    except (redis.RedisError, OSError):
        return True
