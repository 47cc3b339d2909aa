"""The dedup cache (worker/cache.py) on SQLite and on the real PostgreSQL: scores written in one
statement of their own come back by hash, writing a score twice keeps the first, and a job's
entries go with the job (its delete, or retention)."""

from __future__ import annotations

from sqlalchemy import func, select

from reviewscore.core import jobs
from reviewscore.core.db import session_scope, single_statement
from reviewscore.core.schema import ScoreCache
from tests import factories as f
from worker.cache import cached_scores, remember_scores, text_hash


def test_scores_come_back_by_hash_and_a_second_write_keeps_the_first(database: str) -> None:
    texts = [f"review number {i}" for i in range(600)]  # more than one lookup page
    scores = {text_hash(t): (i / 1000, i % 2 == 0) for i, t in enumerate(texts)}
    job_id = f.make_job(1, 1)
    with single_statement() as conn:
        remember_scores(conn, "m-1", scores, job_id)
    with single_statement() as conn:  # the same texts again, other scores: ignored
        remember_scores(conn, "m-1", {h: (0.99, True) for h in scores}, job_id)
    with session_scope(readonly=True) as session:
        found = cached_scores(session, "m-1", [*scores, text_hash("never scored")])
        other_version = cached_scores(session, "m-2", list(scores))
    assert found == scores
    assert other_version == {}


def cached(texts: list[str]) -> dict[bytes, tuple[float, bool]]:
    with session_scope(readonly=True) as session:
        return cached_scores(session, "m-1", [text_hash(t) for t in texts])


def test_a_deleted_job_takes_the_entries_it_added_and_others_keep_theirs(database: str) -> None:
    first, second = f.make_job(5, 5), f.make_job(5, 5)
    assert f.score(first, 0) and f.score(second, 0)
    with single_statement() as conn:
        remember_scores(conn, "m-1", {text_hash("only in the first"): (0.1, False)}, first)
        remember_scores(conn, "m-1", {text_hash("in both"): (0.2, False)}, first)
    with single_statement() as conn:  # the second job met "in both" again: the first's entry
        remember_scores(conn, "m-1", {text_hash("in both"): (0.2, False)}, second)
        remember_scores(conn, "m-1", {text_hash("only in the second"): (0.3, False)}, second)

    jobs.delete_job(first)
    assert cached(["only in the first", "in both"]) == {}
    assert list(cached(["only in the second"]).values()) == [(0.3, False)]
    # A chunk of the deleted job finishing late adds nothing: no entry outlives its job.
    with single_statement() as conn:
        remember_scores(conn, "m-1", {text_hash("late"): (0.4, False)}, first)
    with session_scope(readonly=True) as session:
        assert session.execute(select(func.count()).select_from(ScoreCache)).scalar_one() == 1


def test_retention_purges_a_jobs_cache_entries_with_the_job(database: str) -> None:
    from sqlalchemy import update

    from reviewscore.core.clock import db_now_plus
    from reviewscore.core.schema import Job
    from reviewscore.core.settings import get_settings
    from reviewscore.core.sweeper import sweep

    old = f.make_job(5, 5)
    assert f.score(old, 0)
    with single_statement() as conn:
        remember_scores(
            conn, "m-1", {text_hash(f"old text {i}"): (0.5, True) for i in range(50)}, old
        )
    past = db_now_plus(-(get_settings().job_retention_days + 1) * 86400)
    with single_statement() as conn:
        conn.execute(update(Job).where(Job.id == old).values(finished_at=past))
    report = sweep(get_settings(), queue_is_empty=lambda: True, enqueue=lambda *_: None)
    assert report.purged == [old]
    assert cached([f"old text {i}" for i in range(50)]) == {}
