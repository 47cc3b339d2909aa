"""The dedup cache: scores already computed, by model version and text hash, so a text seen
before (in this job or any other) is not scored again."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from sqlalchemy import Connection, select, text
from sqlalchemy.orm import Session

from reviewscore.core.db import dialect_name, insert_ignoring_conflicts
from reviewscore.core.schema import Job, ScoreCache

Score = tuple[float, bool]  # (p_positive, truncated)


def text_hash(text: str) -> bytes:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).digest()


# One array parameter on PostgreSQL instead of hundreds of IN placeholders the server parses.
PG_LOOKUP = text(
    "SELECT text_hash, p_positive, truncated FROM score_cache "
    "WHERE model_version = :version AND text_hash = ANY(CAST(:hashes AS bytea[]))"
)


def cached_scores(
    session: Session, model_version: str, hashes: Sequence[bytes]
) -> dict[bytes, Score]:
    found: dict[bytes, Score] = {}
    unique = list(set(hashes))
    if dialect_name(session) == "postgresql":
        rows = session.execute(PG_LOOKUP, {"version": model_version, "hashes": unique})
        return {bytes(digest): (p, truncated) for digest, p, truncated in rows}
    for start in range(0, len(unique), 500):
        part = unique[start : start + 500]
        for digest, p, truncated in session.execute(
            select(ScoreCache.text_hash, ScoreCache.p_positive, ScoreCache.truncated).where(
                ScoreCache.model_version == model_version, ScoreCache.text_hash.in_(part)
            )
        ):
            found[digest] = (p, truncated)
    return found


# One statement for a chunk's scores on PostgreSQL: the arrays unnested server-side (measured
# 6x the rows/s of psycopg's executemany, which runs one INSERT per row). The job's row is
# share-locked in it: a delete (which locks the row first, then removes the job's entries)
# waits for it, and one that came first leaves the job marked deleted, so nothing is added.
PG_REMEMBER = text(
    "WITH job AS (SELECT id FROM jobs WHERE id = :job AND deleted_at IS NULL FOR SHARE) "
    "INSERT INTO score_cache (model_version, text_hash, p_positive, truncated, job_id) "
    "SELECT :version, h, p, t, job.id FROM job, unnest(CAST(:hashes AS bytea[]), "
    "CAST(:ps AS float8[]), CAST(:truncated AS bool[])) AS u(h, p, t) ON CONFLICT DO NOTHING"
)


def remember_scores(
    session: Session | Connection, model_version: str, scores: dict[bytes, Score], job_id: str
) -> None:
    """Adds scores the job `job_id` computed, as its entries (deleted with it); a job deleted
    meanwhile adds nothing. Texts already cached keep their first entry (and its job)."""
    if not scores:
        return
    # In hash order: two jobs adding the same texts at once wait for each other's entries in
    # one order, never in a cycle (a deadlock).
    ordered = sorted(scores.items())
    if dialect_name(session) == "postgresql":
        session.execute(
            PG_REMEMBER,
            {
                "job": job_id,
                "version": model_version,
                "hashes": [h for h, _ in ordered],
                "ps": [p for _, (p, _) in ordered],
                "truncated": [t for _, (_, t) in ordered],
            },
        )
        return
    # SQLite: one writer at a time, and this check and the insert share one transaction.
    alive = select(Job.id).where(Job.id == job_id, Job.deleted_at.is_(None))
    if session.execute(alive).first() is None:
        return
    insert_ignoring_conflicts(
        session,
        ScoreCache,
        [
            {
                "model_version": model_version,
                "text_hash": h,
                "p_positive": p,
                "truncated": t,
                "job_id": job_id,
            }
            for h, (p, t) in ordered
        ],
    )
