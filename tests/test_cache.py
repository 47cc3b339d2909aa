"""The dedup cache (worker/cache.py) on SQLite and on the real PostgreSQL: scores written in one
statement of their own come back by hash, and writing a score twice keeps the first."""

from __future__ import annotations

from reviewscore.core.db import session_scope, single_statement
from worker.cache import cached_scores, remember_scores, text_hash


def test_scores_come_back_by_hash_and_a_second_write_keeps_the_first(database: str) -> None:
    texts = [f"review number {i}" for i in range(600)]  # more than one lookup page
    scores = {text_hash(t): (i / 1000, i % 2 == 0) for i, t in enumerate(texts)}
    with single_statement() as conn:
        remember_scores(conn, "m-1", scores)
    with single_statement() as conn:  # the same texts again, other scores: ignored
        remember_scores(conn, "m-1", {h: (0.99, True) for h in scores})
    with session_scope(readonly=True) as session:
        found = cached_scores(session, "m-1", [*scores, text_hash("never scored")])
        other_version = cached_scores(session, "m-2", list(scores))
    assert found == scores
    assert other_version == {}
