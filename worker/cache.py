"""The dedup cache: scores already computed, by model version and text hash, so a text seen
before (in this job or any other) is not scored again."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from reviewscore.core.db import insert_ignoring_conflicts
from reviewscore.core.schema import ScoreCache

Score = tuple[float, bool]  # (p_positive, truncated)


def text_hash(text: str) -> bytes:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).digest()


def cached_scores(
    session: Session, model_version: str, hashes: Sequence[bytes]
) -> dict[bytes, Score]:
    found: dict[bytes, Score] = {}
    unique = list(set(hashes))
    for start in range(0, len(unique), 500):
        part = unique[start : start + 500]
        for digest, p, truncated in session.execute(
            select(ScoreCache.text_hash, ScoreCache.p_positive, ScoreCache.truncated).where(
                ScoreCache.model_version == model_version, ScoreCache.text_hash.in_(part)
            )
        ):
            found[digest] = (p, truncated)
    return found


def remember_scores(
    session: Session | Connection, model_version: str, scores: dict[bytes, Score]
) -> None:
    insert_ignoring_conflicts(
        session,
        ScoreCache,
        [
            {"model_version": model_version, "text_hash": h, "p_positive": p, "truncated": t}
            for h, (p, t) in scores.items()
        ],
    )
