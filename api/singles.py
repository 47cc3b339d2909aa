"""The singles path to the workers: each micro-batch of /v1/score is published as one Celery task,
and its answer comes back on this API process's own Redis list, read by one background listener.

Nothing here blocks the event loop: both the publish (an LPUSH of the task message) and the
listener's BLPOP go through redis.asyncio, and every wait has a deadline: 503 naming Redis when
Redis fails or hangs, 504 when no worker answers in time.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from api.errors import BusyError
from reviewscore.core import replies
from reviewscore.core.celery_app import SINGLES_QUEUE, singles_message
from reviewscore.core.errors import (
    ScoringFailedError,
    ScoringTimeoutError,
    ServiceUnavailableError,
)
from reviewscore.core.messages import SinglesAnswer
from reviewscore.core.settings import Settings

log = logging.getLogger(__name__)

# How long a publish or a Redis read may take before the request is answered 503.
REDIS_TIMEOUT_S = 5.0
# One BLPOP waits this long for a reply before it is sent again.
BLPOP_S = 1.0


def redis_unavailable(what: str, exc: BaseException | None = None) -> BusyError:
    # The same words as api/errors.py uses for every other Redis failure.
    cause = f": {type(exc).__name__}: {exc}" if exc is not None and str(exc) else ""
    return BusyError(f"Redis (the task queue) is unavailable ({what}{cause}); try again shortly")


class ReplyListener:
    """This process's reply list and the one task that BLPOPs it, resolving waiting batches."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self.key = replies.new_reply_key()
        self._redis = client
        self._waiting: dict[str, asyncio.Future[SinglesAnswer]] = {}
        self._task: asyncio.Task[None] | None = None

    def expect(self, batch: str) -> asyncio.Future[SinglesAnswer]:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._listen(), name="singles-replies")
        future: asyncio.Future[SinglesAnswer] = asyncio.get_running_loop().create_future()
        self._waiting[batch] = future
        return future

    def forget(self, batch: str) -> None:
        self._waiting.pop(batch, None)

    async def _listen(self) -> None:
        while True:
            try:
                item = await self._redis.blpop([self.key], timeout=BLPOP_S)
            except (RedisError, OSError) as exc:
                # Replies pushed while Redis is away are lost: fail the waiting requests now
                # rather than at their deadline, and keep listening.
                self._fail_waiting(redis_unavailable("failed while waiting for the answer", exc))
                await asyncio.sleep(0.5)
                continue
            if item is None:
                continue
            batch, answer = replies.decode(item[1])
            future = self._waiting.pop(batch, None)
            if future is not None and not future.done():
                future.set_result(answer)

    def _fail_waiting(self, exc: Exception) -> None:
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(exc)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
                pass
        self._fail_waiting(ServiceUnavailableError("the API is shutting down"))


class WorkerChannel:
    """Sends one micro-batch to the workers and waits for its answer."""

    def __init__(self, settings: Settings) -> None:
        self._timeout_s = settings.singles_timeout_s
        # One client (a pool of connections): the listener's BLPOP holds one, LPUSHes take others.
        self._redis = redis.asyncio.Redis.from_url(
            replies.redis_url(settings.broker_url),
            socket_timeout=BLPOP_S + REDIS_TIMEOUT_S,
            socket_connect_timeout=REDIS_TIMEOUT_S,
            # After a Redis restart every pooled connection is dead: the first command on each
            # would fail ("Connection closed by server") although the new Redis is up. Try again
            # on a fresh connection, briefly. A repeated LPUSH at worst scores a batch twice;
            # the second answer finds no one waiting.
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
            retry_on_error=[RedisConnectionError],
        )
        self._replies = ReplyListener(self._redis)

    async def send(self, texts: list[str], model: str | None) -> SinglesAnswer:
        batch = uuid.uuid4().hex
        future = self._replies.expect(batch)
        try:
            await self._publish(texts, model, batch)
            try:
                answer = await asyncio.wait_for(future, self._timeout_s)
            except TimeoutError as exc:
                raise ScoringTimeoutError(
                    f"no worker answered within {self._timeout_s:.0f}s; "
                    "check that a worker runs (GET /readyz)"
                ) from exc
        finally:
            self._replies.forget(batch)
        if answer.error is not None:
            raise ScoringFailedError(f"the worker could not score these reviews: {answer.error}")
        return answer

    async def _publish(self, texts: list[str], model: str | None, batch: str) -> None:
        awaited = replies.awaited_key(batch)
        message = singles_message(
            texts, model, batch=batch, reply_to=self._replies.key, awaited_key=awaited
        )
        # The key first, then the task, in one round trip: a worker that takes the task finds
        # the key until this wait's deadline, counted by Redis (core/replies.py).
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(awaited, b"1", px=max(int(self._timeout_s * 1000), 1))
        pipe.lpush(SINGLES_QUEUE, message)
        try:
            await asyncio.wait_for(pipe.execute(), REDIS_TIMEOUT_S)
        except TimeoutError as exc:
            raise redis_unavailable(f"did not take the task within {REDIS_TIMEOUT_S:.0f}s") from exc
        except (RedisError, OSError) as exc:
            raise redis_unavailable("cannot be reached", exc) from exc

    async def close(self) -> None:
        await self._replies.close()
        await self._redis.aclose()
