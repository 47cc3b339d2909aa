"""Single reviews from concurrent requests travel to the workers in micro-batches: a request
alone goes out at once, requests that arrive while the batches in flight are out leave together.

The `send` here stands for the worker channel (publish a task, await its reply)."""

from __future__ import annotations

import asyncio

import pytest

from api.batcher import MicroBatcher
from reviewscore.core.messages import SinglesAnswer


class HeldWorkers:
    """A send that records each batch and answers only when the test lets it."""

    def __init__(self) -> None:
        self.sent: list[tuple[list[str], str | None]] = []
        self.release = asyncio.Event()

    async def __call__(self, texts: list[str], model: str | None) -> SinglesAnswer:
        self.sent.append((texts, model))
        await self.release.wait()
        return SinglesAnswer(
            model=model or "m",
            model_version="m-1",
            p_positive=[len(t) / 10 for t in texts],
            truncated=[False] * len(texts),
        )


async def settle() -> None:
    """Let every ready task run (no timer involved: a fixed wait would still be pending)."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_request_alone_is_sent_at_once() -> None:
    async def main() -> list[tuple[list[str], str | None]]:
        workers = HeldWorkers()
        batcher = MicroBatcher(workers, max_in_flight=1, max_size=100)
        request = asyncio.create_task(batcher.score(["only one"], None))
        await settle()
        sent = list(workers.sent)
        workers.release.set()
        await request
        await batcher.close()
        return sent

    assert asyncio.run(main()) == [(["only one"], None)]


def test_requests_arriving_while_batches_are_out_leave_together_with_their_own_answers() -> None:
    async def main() -> tuple[list[list[str]], list[SinglesAnswer]]:
        workers = HeldWorkers()
        batcher = MicroBatcher(workers, max_in_flight=1, max_size=100)
        first = asyncio.create_task(batcher.score(["x"], None))
        await settle()
        later = [asyncio.create_task(batcher.score(["x" * i], None)) for i in range(2, 6)]
        await settle()
        assert len(workers.sent) == 1  # the slot is taken: the four wait
        workers.release.set()
        answers = await asyncio.gather(first, *later)
        await batcher.close()
        return [texts for texts, _ in workers.sent], list(answers)

    sent, answers = asyncio.run(main())
    assert sent == [["x"], ["xx", "xxx", "xxxx", "xxxxx"]]
    assert [a.p_positive for a in answers] == [[0.1], [0.2], [0.3], [0.4], [0.5]]


def test_while_a_batch_is_out_only_a_full_batch_goes_out_beside_it() -> None:
    async def main() -> list[list[str]]:
        workers = HeldWorkers()
        batcher = MicroBatcher(workers, max_in_flight=2, max_size=3)
        first = asyncio.create_task(batcher.score(["a"], None))
        await settle()
        waiting = [asyncio.create_task(batcher.score([t], None)) for t in ("b", "c")]
        await settle()
        assert len(workers.sent) == 1  # two texts are not a full batch: they gather
        waiting.append(asyncio.create_task(batcher.score(["d"], None)))
        await settle()
        assert len(workers.sent) == 2  # three are: a second batch goes out at once
        waiting.append(asyncio.create_task(batcher.score(["e"], None)))
        await settle()
        workers.release.set()
        await asyncio.gather(first, *waiting)
        await batcher.close()
        return [texts for texts, _ in workers.sent]

    assert asyncio.run(main()) == [["a"], ["b", "c", "d"], ["e"]]


def test_batches_stop_at_max_size_and_never_split_a_request() -> None:
    async def main() -> list[int]:
        workers = HeldWorkers()
        batcher = MicroBatcher(workers, max_in_flight=1, max_size=4)
        first = asyncio.create_task(batcher.score(["a"], None))
        await settle()
        rest = [asyncio.create_task(batcher.score(["b", "c", "d"], None)) for _ in range(3)]
        await settle()
        workers.release.set()
        await asyncio.gather(first, *rest)
        await batcher.close()
        return [len(texts) for texts, _ in workers.sent]

    assert asyncio.run(main()) == [1, 3, 3, 3]


def test_each_batch_holds_one_model() -> None:
    async def main() -> list[tuple[list[str], str | None]]:
        workers = HeldWorkers()
        batcher = MicroBatcher(workers, max_in_flight=1, max_size=100)
        first = asyncio.create_task(batcher.score(["a"], None))
        await settle()
        rest = [
            asyncio.create_task(batcher.score([text], model))
            for text, model in (("b", "cnn"), ("c", None), ("d", "cnn"))
        ]
        await settle()
        workers.release.set()
        answers = await asyncio.gather(first, *rest)
        assert [a.model for a in answers] == ["m", "cnn", "m", "cnn"]
        await batcher.close()
        return workers.sent

    assert asyncio.run(main()) == [(["a"], None), (["b", "d"], "cnn"), (["c"], None)]


def test_a_failed_batch_fails_each_of_its_requests_and_the_next_batch_still_goes() -> None:
    calls: list[list[str]] = []

    async def send(texts: list[str], model: str | None) -> SinglesAnswer:
        calls.append(texts)
        if len(calls) == 1:
            raise RuntimeError("the queue is down")
        return SinglesAnswer(model="m", model_version="v", p_positive=[0.5], truncated=[False])

    async def main() -> None:
        batcher = MicroBatcher(send, max_in_flight=1, max_size=100)
        with pytest.raises(RuntimeError, match="the queue is down"):
            await batcher.score(["a"], None)
        assert (await batcher.score(["b"], None)).p_positive == [0.5]
        await batcher.close()

    asyncio.run(main())
    assert calls == [["a"], ["b"]]


def test_an_answer_with_the_wrong_number_of_scores_is_an_error() -> None:
    async def send(texts: list[str], model: str | None) -> SinglesAnswer:
        return SinglesAnswer(model="m", model_version="v", p_positive=[0.5], truncated=[False])

    async def main() -> None:
        batcher = MicroBatcher(send, max_in_flight=1, max_size=100)
        with pytest.raises(RuntimeError, match="1 scores for 2 texts"):
            await batcher.score(["a", "b"], None)
        await batcher.close()

    asyncio.run(main())


def test_a_request_times_out_from_its_arrival_even_while_it_waits_for_a_batch() -> None:
    """Issue 20, defect 5: with the workers stalled, a request behind a batch that is out got
    its timeout only once its own batch left; now it is answered 504 at arrival + timeout and
    is never sent."""
    from reviewscore.core.errors import ScoringTimeoutError

    workers = HeldWorkers()

    async def main() -> float:
        batcher = MicroBatcher(workers, max_in_flight=1, max_size=100, timeout_s=0.3)
        loop = asyncio.get_running_loop()
        started = loop.time()
        first = asyncio.ensure_future(batcher.score(["a"], None))
        await settle()
        second = asyncio.ensure_future(batcher.score(["b"], None))
        for request in (first, second):
            with pytest.raises(ScoringTimeoutError, match="of the request's arrival"):
                await asyncio.wait_for(request, 5)
        waited = loop.time() - started
        workers.release.set()
        await settle()
        await batcher.close()
        return waited

    waited = asyncio.run(main())
    assert waited < 1.0
    assert workers.sent == [(["a"], None)], "the request that timed out while waiting never left"


def test_the_time_a_request_spent_before_the_batcher_counts_against_its_timeout() -> None:
    """Found by the chaos soak: a request whose auth and parsing took a while was answered
    past SINGLES_TIMEOUT_S + 1 s as its client measured it; the bound counts from arrival."""
    import time

    from reviewscore.core.errors import ScoringTimeoutError

    workers = HeldWorkers()

    async def main() -> float:
        batcher = MicroBatcher(workers, max_in_flight=1, max_size=100, timeout_s=1.0)
        arrived = time.monotonic() - 0.8  # the request came in 0.8 s ago
        started = time.monotonic()
        with pytest.raises(ScoringTimeoutError):
            await batcher.score(["a"], None, arrived)
        waited = time.monotonic() - started
        workers.release.set()
        await settle()
        await batcher.close()
        return waited

    assert asyncio.run(main()) < 0.5  # 1.0 s from arrival, not from this call


def test_the_waiting_list_is_bounded_and_a_request_past_it_is_refused_at_once() -> None:
    from api.errors import BusyError

    workers = HeldWorkers()

    async def main() -> None:
        batcher = MicroBatcher(workers, max_in_flight=1, max_size=100, max_waiting=3)
        out = asyncio.ensure_future(batcher.score(["out"], None))  # the batch in flight
        await settle()
        waiting = asyncio.ensure_future(batcher.score(["w1", "w2"], None))
        await settle()
        with pytest.raises(BusyError, match="REVIEWSCORE_SINGLES_MAX_WAITING"):
            await batcher.score(["w3", "w4"], None)
        workers.release.set()
        await asyncio.gather(out, waiting)
        await batcher.close()

    asyncio.run(main())
    assert workers.sent == [(["out"], None), (["w1", "w2"], None)]


def test_a_request_whose_client_left_is_dropped_before_its_batch_leaves() -> None:
    workers = HeldWorkers()

    async def main() -> None:
        batcher = MicroBatcher(workers, max_in_flight=1, max_size=100)
        out = asyncio.ensure_future(batcher.score(["out"], None))
        await settle()
        gone = asyncio.ensure_future(batcher.score(["gone"], None))
        stays = asyncio.ensure_future(batcher.score(["stays"], None))
        await settle()
        gone.cancel()  # what the route does when its client hangs up
        await settle()
        workers.release.set()
        await asyncio.gather(out, stays)
        await batcher.close()

    asyncio.run(main())
    assert workers.sent == [(["out"], None), (["stays"], None)]
