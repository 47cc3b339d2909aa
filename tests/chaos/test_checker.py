"""The chaos checker on a real PostgreSQL database (no hosts): a history and a database that
hold what the rules ask pass; each kind of damage is named."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from reviewscore.core import jobs
from reviewscore.core.db import session_scope
from tests import factories
from tests.chaos.checker import check


class Db:
    def __init__(self, url: str) -> None:
        self.engine = create_engine(url, poolclass=NullPool)

    def sql(self, query: str, admin: bool = False, **params: Any) -> list[Any]:
        with self.engine.begin() as conn:
            result = conn.execute(text(query), params)
            return list(result.all()) if result.returns_rows else []


@pytest.mark.parametrize("database", ["postgres"], indirect=True)
def test_the_checker_passes_a_sound_run_and_names_each_kind_of_damage(database: str) -> None:
    job_id = factories.make_job(10, 5)
    assert factories.score(job_id, 0) and factories.score(job_id, 1)
    db = Db(database)
    history: list[dict[str, Any]] = [
        {"op": "upload", "status": 202, "job": job_id, "prefix": "id", "n": 10, "format": "csv",
         "t0": 0.0, "t1": 0.5},
        {"op": "final_seen", "job": job_id, "job_status": "succeeded", "scored": 10, "failed": 0,
         "results": 10, "t0": 1.0},
        {"op": "score", "method": "POST", "path": "/v1/score", "status": 200, "t0": 1.0,
         "t1": 1.2},
    ]  # fmt: skip
    sound = check(db, 1, history, 5.0, 3.0)
    assert sound.violations == [], sound.violations
    assert sound.last_line() == (
        "chaos: seed 1, 0 faults, 1 jobs, 10 rows, 0 lost, 0 duplicated, 0 late, 0 HTTP 500"
    )

    db.sql("DELETE FROM results WHERE job_id = :j AND row_num = 3", j=job_id)
    history += [
        {"op": "score", "method": "POST", "path": "/v1/score", "status": 0, "t0": 2.0, "t1": 9.0},
        {"op": "status", "method": "GET", "path": "/", "status": 500, "t0": 3.0, "t1": 3.1},
        {"op": "cancel", "method": "POST", "path": "/v1/jobs/x/cancel", "status": 200, "key": 0,
         "owner": 1, "t0": 4.0, "t1": 4.1},
        {"op": "export", "status": -1, "detail": "ValueError('bad json')", "t0": 5.0, "t1": 5.1},
    ]  # fmt: skip
    broken = check(db, 1, history, 5.0, None)
    assert (broken.lost, broken.duplicated, broken.http_500) == (1, 1, 1), broken
    said = "\n".join(broken.violations)
    assert f"job {job_id} (succeeded): 1 rows without a result" in said
    assert "counters 10 scored + 0 failed, 9 result rows" in said
    assert "changed after final" in said
    assert "POST /v1/score at 2.0s: 0 after 7.0s" in said
    assert "HTTP 500 from GET / at 3.0s" in said
    assert "not all final" in said
    assert "key 0 got 200 for POST /v1/jobs/x/cancel, a job of key 1" in said
    assert "export at 5.0s raised ValueError('bad json')" in said


@pytest.mark.parametrize("database", ["postgres"], indirect=True)
def test_a_delete_under_way_or_unanswered_is_neither_left_over_nor_lost(database: str) -> None:
    """Seed 101's 30-minute run: a job deleted (204) whose API died mid-erase is marked deleted,
    its rows left for the sweeper (after DELETE_GRACE_S); a DELETE that got no answer may have
    happened, so its job may be gone. Neither is damage; a job gone with no DELETE sent is."""
    erasing = factories.make_job(4, 4)
    assert factories.score(erasing, 0)
    db = Db(database)
    db.sql("UPDATE jobs SET deleted_at = now(), status = 'cancelled' WHERE id = :j", j=erasing)
    history: list[dict[str, Any]] = [
        {"op": "upload", "status": 202, "job": erasing, "prefix": "id", "n": 4, "format": "csv",
         "t0": 0.0, "t1": 0.5},
        {"op": "delete", "status": 204, "job": erasing, "t0": 1.0, "t1": 1.2},
        {"op": "upload", "status": 202, "job": "f" * 32, "prefix": "g", "n": 7, "format": "jsonl",
         "t0": 2.0, "t1": 2.5},
        {"op": "delete", "status": 0, "job": "f" * 32, "t0": 3.0, "t1": 3.1},
    ]  # fmt: skip
    report = check(db, 1, history, 5.0, 3.0)
    assert report.violations == [], report.violations
    assert report.lost == 0
    unsent = check(db, 1, [e for e in history if e["status"] != 0], 5.0, 3.0)
    assert unsent.violations == [f"job {'f' * 32} (jsonl) accepted, now missing"]


@pytest.mark.parametrize("database", ["postgres"], indirect=True)
def test_a_job_cancelled_before_its_chunks_were_scored_keeps_its_rows_in_their_blobs(
    database: str,
) -> None:
    """Seed 101 in stop 27's first run: a CSV upload is stored as records blobs (ingest design
    (b)), and its job cancelled before a worker parsed them has no input rows; its rows are
    still stored (the export lists them), so the checker finds every id sent. Only a blob gone
    too is a loss."""
    job_id = factories.make_records_job(10, 4)
    with session_scope() as s:
        jobs.cancel_job(s, job_id)
    db = Db(database)
    history: list[dict[str, Any]] = [
        {"op": "upload", "status": 202, "job": job_id, "prefix": "id", "n": 10, "format": "csv",
         "t0": 0.0, "t1": 0.5},
    ]  # fmt: skip
    report = check(db, 1, history, 5.0, 3.0)
    assert report.violations == [], report.violations
    assert (report.rows, report.lost) == (10, 0)

    db.sql("DELETE FROM chunk_texts WHERE job_id = :j AND seq = 1", j=job_id)
    report = check(db, 1, history, 5.0, 3.0)
    assert report.lost == 4
    assert f"job {job_id} (csv): sent 10 rows, 202, stored 6 (6 with the ids sent)" in "\n".join(
        report.violations
    )
