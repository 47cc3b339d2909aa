"""Fair share between API keys, in-process on real SQLite and PostgreSQL: a worker's next claim
goes round-robin over the keys with work queued (weighted), not by the order chunks were sent,
so one key's dump cannot hold up another key's small job."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import update

from reviewscore.core import chunks, keys
from reviewscore.core.db import session_scope
from reviewscore.core.schema import Job
from tests import factories as f

pytestmark = pytest.mark.usefixtures("database")
CHUNK = 10


def key(name: str, weight: float | None = None) -> int:
    with session_scope() as s:
        record, _ = keys.create_key(s, name)
        record.weight = weight
        return record.id


def owned_job(owner: int, n_rows: int) -> str:
    job_id = f.make_job(n_rows, CHUNK)
    with session_scope() as s:
        s.execute(update(Job).where(Job.id == job_id).values(owner_key_id=owner))
    return job_id


def claim_next() -> chunks.ChunkWork | None:
    return chunks.claim_next(None, lease_s=60, max_attempts=3, worker="test:1", chunk_rows=CHUNK)


def claims(n: int, names: dict[str, str]) -> str:
    """Which key's chunk each of the next n claims took, as a string of key names."""
    taken = ""
    for _ in range(n):
        work = claim_next()
        assert work is not None
        taken += names[work.job_id]
        f.complete(work)
    return taken


def test_a_small_job_of_another_key_is_claimed_between_the_chunks_of_a_big_one() -> None:
    a, b = key("a"), key("b")
    dump = owned_job(a, 100)  # 10 chunks, all queued before b's job arrives
    small = owned_job(b, 30)
    assert claims(8, {dump: "A", small: "B"}) == "ABABABAA"
    assert f.job(small).finished and f.tally(small) == f.Tally(30, 0, 30, 0)


def test_a_key_of_weight_three_gets_three_chunks_for_each_of_a_key_of_weight_one() -> None:
    a, b = key("a"), key("b", weight=3)
    first, second = owned_job(a, 200), owned_job(b, 200)
    taken = claims(24, {first: "A", second: "B"})
    # After the first turns (b starts at a's level), every four claims hold one of a's.
    steady = taken[8:]
    assert steady.count("B") == 12 and steady.count("A") == 4, taken


def test_a_key_served_alone_for_long_takes_turns_with_a_key_that_comes_after_it() -> None:
    a, b = key("a"), key("b")
    early = owned_job(a, 200)
    assert claims(6, {early: "A"}) == "AAAAAA"  # a alone takes every chunk
    late = owned_job(b, 200)
    # b is not given every worker to catch up, nor a shut out: they alternate.
    assert claims(6, {early: "A", late: "B"}) in ("BABABA", "ABABAB")
    # And b, now well served, does not shut out a third key that comes later.
    c = key("c")
    later = owned_job(c, 50)
    taken = claims(6, {early: "A", late: "B", later: "C"})
    assert taken.count("C") == 2 and taken.count("A") == 2, taken


def test_concurrent_fair_claims_never_take_a_chunk_twice() -> None:
    a, b = key("a"), key("b")
    jobs = [owned_job(a, 200), owned_job(b, 200)]
    taken: list[tuple[str, int]] = []
    lock = threading.Lock()

    def worker() -> None:
        while (work := claim_next()) is not None:
            with lock:
                taken.append((work.job_id, work.seq))
            f.complete(work)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == sorted((j, seq) for j in jobs for seq in range(20))
    assert all(f.tally(j) == f.Tally(200, 0, 200, 0) for j in jobs)


def test_a_message_delivered_again_takes_back_the_chunk_its_lost_worker_held() -> None:
    a = key("a")
    job_id = owned_job(a, 30)
    first = chunks.claim_next(
        "task-1", lease_s=60, max_attempts=3, worker="gone:1", chunk_rows=CHUNK
    )
    assert first is not None and first.attempt == 1
    again = chunks.claim_next(
        "task-1", lease_s=60, max_attempts=3, worker="new:2", chunk_rows=CHUNK
    )
    assert again is not None and (again.job_id, again.seq, again.attempt) == (
        job_id,
        first.seq,
        2,
    )
