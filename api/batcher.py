"""Gathers concurrent /v1/score requests into micro-batches: one Celery task per batch, not per review."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

SendBatch = Callable[[list[str], str | None], Awaitable[dict[str, Any]]]


@dataclass
class _Pending:
    texts: list[str]
    model: str | None
    future: asyncio.Future[dict[str, Any]] = field(repr=False)


class MicroBatcher:
    """Waits up to `wait_s` after the first request (or until `max_size` texts) then sends one batch."""

    def __init__(self, send: SendBatch, *, wait_s: float, max_size: int) -> None:
        self._send = send
        self._wait_s = wait_s
        self._max_size = max_size
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def score(self, texts: list[str], model: str | None) -> dict[str, Any]:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(texts, model, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            batch = [first]
            size = len(first.texts)
            deadline = loop.time() + self._wait_s
            while size < self._max_size:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), timeout)
                except TimeoutError:
                    break
                batch.append(item)
                size += len(item.texts)
            by_model: dict[str | None, list[_Pending]] = {}
            for item in batch:
                by_model.setdefault(item.model, []).append(item)
            for model, items in by_model.items():
                asyncio.create_task(self._dispatch(model, items))

    async def _dispatch(self, model: str | None, items: list[_Pending]) -> None:
        texts = [t for item in items for t in item.texts]
        try:
            answer = await self._send(texts, model)
        except BaseException as exc:  # noqa: BLE001 - every waiting request gets the failure
            for item in items:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        start = 0
        for item in items:
            end = start + len(item.texts)
            part = dict(answer)
            part["p_positive"] = answer["p_positive"][start:end]
            part["truncated"] = answer["truncated"][start:end]
            if not item.future.done():
                item.future.set_result(part)
            start = end

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
