"""The migrations build exactly the schema the ORM declares, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from reviewscore.core.db import get_engine, session_scope
from reviewscore.core.migrate import alembic_config, upgrade
from reviewscore.core.results import iter_results
from reviewscore.core.schema import Base
from tests import factories as f
from worker.cache import cached_scores, text_hash


def test_migrated_database_matches_the_models(database: str) -> None:
    with get_engine().connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_migration_0014_keeps_cache_entries_and_the_versions_results_are_read_with(
    database: str,
) -> None:
    """Down to 0013 and up again, on a database with a scored job and old-format cache entries:
    the entries are found under their version (not another), and the results still say theirs."""
    job_id = f.make_job(3, 3)
    assert f.score(job_id, 0)
    get_engine().dispose()
    command.downgrade(alembic_config(database), "0013")
    old = text(
        "INSERT INTO score_cache (model_version, text_hash, p_positive, truncated, job_id) "
        "VALUES (:version, :hash, 0.25, :truncated, :job)"
    )
    with get_engine().begin() as conn:
        versions = conn.execute(text("SELECT DISTINCT model_version FROM results")).scalars()
        assert list(versions) == ["stub-1"]
        conn.execute(
            old, {"version": "m-1", "hash": text_hash("kept"), "truncated": True, "job": job_id}
        )
    get_engine().dispose()
    upgrade(database)
    with session_scope(readonly=True) as session:
        assert cached_scores(session, "m-1", [text_hash("kept")]) == {
            text_hash("kept"): (0.25, True)
        }
        assert cached_scores(session, "m-2", [text_hash("kept")]) == {}
    assert [line.model_version for line in iter_results(job_id)] == ["stub-1"] * 3
