"""Gathers concurrent /v1/score requests into micro-batches: one Celery task per batch, not per
review, and no fixed wait. A request goes out at once when no batch is out. While one is out,
requests gather and leave together (up to `max_size` texts) the moment it comes back, so batches
grow with the load; only a full batch goes out beside others, up to `max_in_flight` at once
(so several worker processes are kept busy when the load fills batches).

A request's time counts from its arrival: one not answered within `timeout_s` gets a 504 even
while it is still waiting for a batch to leave (and is then never sent). At most `max_waiting`
texts wait; past that a request gets a 503 at once, so a stalled worker pool cannot pile up
requests and their texts without end. A request whose client left (its task cancelled) is
dropped from the waiting list."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from api.errors import BusyError
from reviewscore.core.errors import ScoringTimeoutError
from reviewscore.core.messages import SinglesAnswer

SendBatch = Callable[[list[str], str | None], Awaitable[SinglesAnswer]]
Close = Callable[[], Awaitable[None]]


@dataclass
class _Pending:
    texts: list[str]
    model: str | None
    future: asyncio.Future[SinglesAnswer] = field(repr=False)


class MicroBatcher:
    def __init__(
        self,
        send: SendBatch,
        *,
        max_in_flight: int,
        max_size: int,
        on_close: Close | None = None,
        timeout_s: float | None = None,
        max_waiting: int | None = None,
    ) -> None:
        self._timeout_s = timeout_s
        self._max_waiting = max_waiting
        self._send = send
        self._max_in_flight = max(1, max_in_flight)
        self._max_size = max_size
        self._on_close = on_close
        self._waiting: deque[_Pending] = deque()
        self._waiting_texts = 0
        # Handles on the batches out (Ray Serve keeps its batch task too): close() cancels them.
        self._in_flight: set[asyncio.Task[None]] = set()

    async def score(
        self, texts: list[str], model: str | None, arrived: float | None = None
    ) -> SinglesAnswer:
        """The scores of `texts`, batched with other requests' texts. The wait is bounded from
        `arrived` (time.monotonic() when the request came in; now if not given), so the time
        the request spent before this call (auth, parsing) counts too."""
        if self._timeout_s is None:
            timeout = None
        else:
            spent = 0.0 if arrived is None else max(time.monotonic() - arrived, 0.0)
            timeout = max(self._timeout_s - spent, 0.0)
        if self._max_waiting is not None and self._waiting_texts + len(texts) > self._max_waiting:
            raise BusyError(
                f"{self._waiting_texts:,} reviews are already waiting for a worker "
                "(REVIEWSCORE_SINGLES_MAX_WAITING); try again shortly",
                retry_after_s=2,
            )
        future: asyncio.Future[SinglesAnswer] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Pending(texts, model, future))
        self._waiting_texts += len(texts)
        self._send_what_fits()
        try:
            # shield: a timeout cancels the future below, not the batch it may be part of.
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            raise ScoringTimeoutError(
                f"no worker answered within {self._timeout_s:g} s of the request's arrival "
                "(REVIEWSCORE_SINGLES_TIMEOUT_S); check that a worker runs (GET /readyz)"
            ) from None
        finally:
            # Timed out, or the client left: if it still waits it is never sent (_take_batch).
            future.cancel()
            self._forget_cancelled()

    def _forget_cancelled(self) -> None:
        if any(item.future.done() for item in self._waiting):
            self._waiting = deque(item for item in self._waiting if not item.future.done())
            self._waiting_texts = sum(len(item.texts) for item in self._waiting)

    @property
    def batches_in_flight(self) -> int:
        return len(self._in_flight)

    def _may_send(self) -> bool:
        if not self._in_flight:
            return True
        full = self._waiting_texts >= self._max_size
        return full and len(self._in_flight) < self._max_in_flight

    def _send_what_fits(self) -> None:
        while self._waiting and self._may_send():
            batch = self._take_batch()
            if not batch:
                return
            task = asyncio.create_task(self._dispatch(batch))
            self._in_flight.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._send_what_fits()

    def _take_batch(self) -> list[_Pending]:
        """The oldest waiting request and those after it for the same model, up to max_size
        texts (a request is never split; one larger than max_size goes alone)."""
        batch: list[_Pending] = []
        kept: deque[_Pending] = deque()
        size = 0
        while self._waiting:
            item = self._waiting.popleft()
            if item.future.done():  # its client went away while it waited
                continue
            fits = not batch or (
                item.model == batch[0].model and size + len(item.texts) <= self._max_size
            )
            if fits:
                batch.append(item)
                size += len(item.texts)
            else:
                kept.append(item)
            if size >= self._max_size:
                break
        kept.extend(self._waiting)
        self._waiting = kept
        self._waiting_texts = sum(len(item.texts) for item in kept)
        return batch

    async def _dispatch(self, batch: list[_Pending]) -> None:
        texts = [t for item in batch for t in item.texts]
        try:
            answer = await self._send(texts, batch[0].model)
            if len(answer.p_positive) != len(texts):
                raise RuntimeError(
                    f"the worker answered {len(answer.p_positive)} scores for {len(texts)} texts"
                )
        except asyncio.CancelledError:
            for item in batch:
                item.future.cancel()
            raise
        except Exception as exc:  # every request of the batch gets the failure
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        start = 0
        for item in batch:
            end = start + len(item.texts)
            if not item.future.done():
                item.future.set_result(answer.part(start, end))
            start = end

    async def close(self) -> None:
        for task in list(self._in_flight):
            task.cancel()
        for item in self._waiting:
            item.future.cancel()
        self._waiting.clear()
        self._waiting_texts = 0
        if self._on_close is not None:
            await self._on_close()
