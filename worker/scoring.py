"""Scoring a claimed chunk: dedup against earlier scores, batch the rest, isolate rows that raise,
and stop between pieces once the chunk's lease is lost (worker.lease.LeaseKeeper keeps it on a
timer)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from reviewscore.core.chunks import ChunkWork, RowResult
from worker.cache import Score, text_hash

if TYPE_CHECKING:
    from reviewscore.model.scorer import Scorer


PIECE_BATCHES = 4


@dataclass
class ChunkOutcome:
    results: list[RowResult]
    new_scores: dict[bytes, Score]
    scored_now: int
    from_cache: int


def score_texts_isolating_failures(
    scorer: Scorer, texts: list[str], between_batches: Callable[[], None] = lambda: None
) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """Scores texts batch by batch; if a batch raises, re-scores it in halves so only the rows
    that really fail are marked failed (a poison row costs log2(n) extra calls, not the whole
    chunk). `between_batches` runs after each piece (it raises to stop once the lease is lost)."""
    n = len(texts)
    p = np.full(n, np.nan, dtype=np.float32)
    truncated = np.zeros(n, dtype=bool)
    errors: dict[int, str] = {}

    def run(lo: int, hi: int) -> None:
        try:
            scores = scorer.score(texts[lo:hi])
            p[lo:hi] = scores.p_positive
            truncated[lo:hi] = scores.truncated
        except Exception as exc:  # noqa: BLE001 - any model failure is isolated the same way
            if hi - lo == 1:
                errors[lo] = f"scoring failed: {type(exc).__name__}: {exc}"[:500]
                return
            mid = (lo + hi) // 2
            run(lo, mid)
            run(mid, hi)

    # Pieces of a few batches: the scorer orders texts by length within a call (the CNN pads
    # less); a lost lease stops the work between pieces (the lease is kept on a timer, since
    # a 1,000-row chunk is one piece).
    step = max(1, scorer.batch_size * PIECE_BATCHES)
    for lo in range(0, n, step):
        run(lo, min(n, lo + step))
        between_batches()
    return p, truncated, errors


def row_hashes(work: ChunkWork) -> dict[int, bytes]:
    """Content hash of each scorable row, by row number (computed once per chunk)."""
    return {row.row_num: text_hash(row.text) for row in work.rows if row.error is None}


def score_chunk_rows(
    scorer: Scorer,
    work: ChunkWork,
    hashes: dict[int, bytes],
    cached: dict[bytes, Score],
    between_batches: Callable[[], None] = lambda: None,
) -> ChunkOutcome:
    results: dict[int, RowResult] = {}
    pending: dict[bytes, list[int]] = {}
    texts_by_hash: dict[bytes, str] = {}
    for row in work.rows:
        if row.error is not None:
            results[row.row_num] = RowResult(row.row_num, None, False, row.error)
            continue
        h = hashes[row.row_num]
        if h in cached:
            cached_p, cached_t = cached[h]
            results[row.row_num] = RowResult(row.row_num, cached_p, cached_t, None)
        else:
            pending.setdefault(h, []).append(row.row_num)
            texts_by_hash[h] = row.text
    to_score = list(pending)
    p, truncated, errors = score_texts_isolating_failures(
        scorer, [texts_by_hash[h] for h in to_score], between_batches
    )
    new_scores: dict[bytes, Score] = {}
    for i, h in enumerate(to_score):
        error = errors.get(i)
        value = None if error else float(p[i])
        if error is None:
            new_scores[h] = (float(p[i]), bool(truncated[i]))
        for row_num in pending[h]:
            results[row_num] = RowResult(
                row_num, value, bool(truncated[i]) if value is not None else False, error
            )
    from_cache = sum(1 for r in work.rows if r.error is None) - sum(
        len(v) for v in pending.values()
    )
    return ChunkOutcome(
        results=[results[r.row_num] for r in work.rows],
        new_scores=new_scores,
        scored_now=len(to_score),
        from_cache=from_cache,
    )
