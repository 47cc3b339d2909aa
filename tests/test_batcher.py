"""Single reviews from concurrent requests travel to the workers in micro-batches."""

from __future__ import annotations

import asyncio
from typing import Any

from api.batcher import MicroBatcher


def test_concurrent_requests_share_one_batch_and_get_their_own_answers() -> None:
    sent: list[list[str]] = []

    async def send(texts: list[str], model: str | None) -> dict[str, Any]:
        sent.append(texts)
        return {
            "model": "m",
            "model_version": "m-1",
            "p_positive": [len(t) / 10 for t in texts],
            "truncated": [False] * len(texts),
        }

    async def main() -> list[dict[str, Any]]:
        batcher = MicroBatcher(send, wait_s=0.05, max_size=100)
        answers = await asyncio.gather(*(batcher.score(["x" * i], None) for i in range(1, 6)))
        await batcher.close()
        return list(answers)

    answers = asyncio.run(main())
    assert len(sent) == 1 and len(sent[0]) == 5
    assert [a["p_positive"] for a in answers] == [[0.1], [0.2], [0.3], [0.4], [0.5]]


def test_a_full_batch_is_sent_without_waiting() -> None:
    sent: list[int] = []

    async def send(texts: list[str], model: str | None) -> dict[str, Any]:
        sent.append(len(texts))
        return {
            "model": "m",
            "model_version": "v",
            "p_positive": [0.5] * len(texts),
            "truncated": [False] * len(texts),
        }

    async def main() -> None:
        batcher = MicroBatcher(send, wait_s=10.0, max_size=4)
        await asyncio.wait_for(
            asyncio.gather(*(batcher.score(["a", "b"], None) for _ in range(2))), 2
        )
        await batcher.close()

    asyncio.run(main())
    assert sent == [4]
