"""The dedup cache: scores already computed, by model version and text hash, so a text seen
before (in this job or any other) is not scored again."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence

from sqlalchemy import Connection, select, text
from sqlalchemy.orm import Session

from reviewscore.core.db import dialect_name, insert_ignoring_conflicts
from reviewscore.core.schema import Job, ScoreCache

Score = tuple[float, bool]  # (p_positive, truncated)


def text_hash(text: str) -> bytes:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).digest()


def entry_key(model_version: str, digest: bytes) -> bytes:
    """An entry's key (ScoreCache.key): the version and the text's hash in one sha1, cut to
    16 bytes, so the table and its index hold 16 bytes a row where they held both. Migration
    0014 computes the same key; the NUL ends the version, so no two (version, hash) pairs share
    an input."""
    return hashlib.sha1(model_version.encode() + b"\0" + digest).digest()[:16]


# One array parameter on PostgreSQL instead of hundreds of IN placeholders the server parses.
PG_LOOKUP = text(
    "SELECT key, p_positive, truncated FROM score_cache WHERE key = ANY(CAST(:keys AS uuid[]))"
)


def cached_scores(
    session: Session, model_version: str, hashes: Sequence[bytes]
) -> dict[bytes, Score]:
    """The cached scores of these text hashes under `model_version`, by text hash."""
    by_key = {entry_key(model_version, h): h for h in set(hashes)}
    keys = list(by_key)
    if dialect_name(session) == "postgresql":
        # Raw SQL: the keys as the uuids they are stored as (ScoreCache.key's type).
        rows = session.execute(PG_LOOKUP, {"keys": [uuid.UUID(bytes=k) for k in keys]})
        return {by_key[key.bytes]: (p, truncated) for key, p, truncated in rows}
    found: dict[bytes, Score] = {}
    for start in range(0, len(keys), 500):
        part = keys[start : start + 500]
        for key, p, truncated in session.execute(
            select(ScoreCache.key, ScoreCache.p_positive, ScoreCache.truncated).where(
                ScoreCache.key.in_(part)
            )
        ):
            found[by_key[bytes(key)]] = (p, truncated)
    return found


# One statement for a chunk's scores on PostgreSQL: the arrays unnested server-side (measured
# 6x the rows/s of psycopg's executemany, which runs one INSERT per row). The job's row is
# share-locked in it: a delete (which locks the row first, then removes the job's entries)
# waits for it, and one that came first leaves the job marked deleted, so nothing is added.
PG_REMEMBER = text(
    "WITH job AS (SELECT id FROM jobs WHERE id = :job AND deleted_at IS NULL FOR SHARE) "
    "INSERT INTO score_cache (key, p_positive, truncated, job_id) "
    "SELECT k, p, t, job.id FROM job, unnest(CAST(:keys AS uuid[]), "
    "CAST(:ps AS float8[]), CAST(:truncated AS bool[])) AS u(k, p, t) ON CONFLICT DO NOTHING"
)


def remember_scores(
    session: Session | Connection, model_version: str, scores: dict[bytes, Score], job_id: str
) -> None:
    """Adds scores the job `job_id` computed, as its entries (deleted with it); a job deleted
    meanwhile adds nothing. Texts already cached keep their first entry (and its job)."""
    if not scores:
        return
    # In key order: two jobs adding the same texts at once wait for each other's entries in
    # one order, never in a cycle (a deadlock).
    ordered = sorted((entry_key(model_version, h), score) for h, score in scores.items())
    if dialect_name(session) == "postgresql":
        session.execute(
            PG_REMEMBER,
            {
                "job": job_id,
                "keys": [uuid.UUID(bytes=k) for k, _ in ordered],
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
                "key": k,
                "p_positive": p,
                "truncated": t,
                "job_id": job_id,
            }
            for k, (p, t) in ordered
        ],
    )
