"""The Celery tasks: score a chunk of a job, score a few texts for /v1/score, sweep lost work.
Importing this module connects the worker's signal handlers (worker/signals.py) too.

Start with: celery -A worker.tasks worker -Q singles,bulk
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from celery import Task
from sqlalchemy.exc import DBAPIError

import worker.signals  # noqa: F401 - connects the node's and pool processes' handlers
from reviewscore.core import chunks, delivery, event_counts, jobs, replies, sweeper, webhooks
from reviewscore.core.celery_app import (
    BULK_QUEUE,
    DELIVER_RESULTS,
    SCORE_CHUNK,
    SCORE_TEXTS,
    SWEEP,
    celery_app,
    enqueue_chunk,
    enqueue_delivery,
    queue_depth,
)
from reviewscore.core.db import session_scope, single_statement
from reviewscore.core.messages import SinglesAnswer
from reviewscore.core.settings import get_settings
from worker import cache, plugins
from worker.lease import ChunkLostError, LeaseKeeper
from worker.models_cache import get_scorer
from worker.readiness import check_usable, process_name
from worker.scoring import row_hashes, score_chunk_rows

log = logging.getLogger(__name__)

__all__ = ["celery_app", "score_chunk", "score_texts", "sweep"]


def _backoff(tries: int, cap: float = 10.0) -> float:
    return float(min(cap, 2**tries))


@celery_app.task(name=SCORE_CHUNK, bind=True, ignore_result=True, max_retries=None)
def score_chunk(self: Task, job_id: str, seq: int) -> None:
    check_usable()
    settings = get_settings()
    started = time.perf_counter()
    try:
        # The message says that a chunk is queued, not which is next: the claim takes the next
        # in fair order between keys (core/fair_share.py), maybe another job's.
        work = chunks.claim_next(
            self.request.id,
            lease_s=settings.chunk_lease_s,
            max_attempts=settings.chunk_max_attempts,
            worker=process_name(),
            chunk_rows=settings.chunk_size,
        )
    except DBAPIError as exc:
        # The database is unreachable: nothing was claimed. Retrying (not acknowledging the
        # message as done) keeps the chunk in the queue; no attempt is spent.
        log.warning("chunk %s/%s: cannot claim (%s); retrying", job_id, seq, exc.__class__.__name__)
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc
    if work is None:
        # Nothing queued: other messages' claims took every chunk (a chunk sent twice, or one
        # of a cancelled or deleted job, leaves a message over).
        log.info("chunk_skipped %s", json.dumps({"job": job_id, "seq": seq}))
        return
    job_id, seq = work.job_id, work.seq
    try:
        # The lease is kept from here on, through the model load and the cache lookup too.
        with LeaseKeeper(work, settings.chunk_lease_s) as keeper:
            _score_and_write(work, started, keeper)
    except ChunkLostError:
        log.warning("chunk %s/%s attempt %s: lost its lease; stopped", job_id, seq, work.attempt)
    except Exception as exc:
        log.exception("chunk %s/%s failed on attempt %s", job_id, seq, work.attempt)
        countdown = _backoff(work.attempt, cap=30)
        try:
            # Claimable again after half the countdown (by this message's retry, or another):
            # a margin for the hosts' clocks, as the pause is judged on the database's.
            chunks.hand_back(work, f"{type(exc).__name__}: {exc}", retry_in_s=countdown / 2)
        except Exception:  # noqa: BLE001 - the lease runs out and the sweeper hands it back
            log.warning("chunk %s/%s: could not hand it back", job_id, seq, exc_info=True)
        # Claim it again later; the claim counts the attempt and gives up past the cap.
        raise self.retry(exc=exc, countdown=countdown) from exc


def _score_and_write(work: chunks.ChunkWork, started: float, keeper: LeaseKeeper) -> None:
    # The version the job is pinned to, whatever this host had installed: the registry has it.
    scorer = get_scorer(work.model_name, work.model_version)
    jobs.mark_started(work.job_id, scorer.device)
    claimed = time.perf_counter()
    hashes = row_hashes(work)
    with session_scope(readonly=True) as session:
        cached = cache.cached_scores(session, work.model_version, list(hashes.values()))
    looked_up = time.perf_counter()
    plugin = plugins.installed  # None unless a test installed one (worker/plugins.py)
    if plugin is not None:
        plugin.before_scoring(work, keeper)
    outcome = score_chunk_rows(scorer, work, hashes, cached, keeper)
    keeper.confirm()
    scored = time.perf_counter()
    with session_scope() as session:
        written = chunks.complete_chunk(session, work, outcome.results)
        if plugin is not None:
            plugin.before_commit(work)
    committed = remembered = time.perf_counter()
    if written:
        _remember(work, outcome.new_scores)
        remembered = time.perf_counter()
        if jobs.try_complete(work.job_id):
            _deliver_soon(work.job_id)
            webhooks.send_soon(work.job_id)
    done = time.perf_counter()
    # Where a chunk's time goes, as one JSON record (the benchmark reads these).
    log.info(
        "%s %s",
        "chunk_written" if written else "chunk_discarded (already done by another attempt)",
        json.dumps(
            {
                "job": work.job_id,
                "seq": work.seq,
                "attempt": work.attempt,
                "rows": len(work.rows),
                "scored": outcome.scored_now,
                "cached": outcome.from_cache,
                "claim_s": round(claimed - started, 4),
                "lookup_s": round(looked_up - claimed, 4),
                "score_s": round(scored - looked_up, 4),
                # write_s = results_s (results and the chunk's counts, one transaction) +
                # cache_s (the dedup cache) + complete_s (the job's completion statement)
                "write_s": round(done - scored, 4),
                "results_s": round(committed - scored, 4),
                "cache_s": round(remembered - committed, 4),
                "complete_s": round(done - remembered, 4),
            }
        ),
    )


def _remember(work: chunks.ChunkWork, scores: dict[bytes, cache.Score]) -> None:
    """Adds a chunk's new scores to the dedup cache, after the chunk's commit and in one
    statement of its own: no transaction holds cache rows across a round trip, so a host cut
    off mid-completion never makes another job's chunk that shares a text wait for a lock; and
    the cache is only a shortcut, so a failure here costs a later cache miss, not an attempt."""
    try:
        with single_statement() as conn:
            cache.remember_scores(conn, work.model_version, scores, work.job_id)
    except DBAPIError as exc:
        log.warning("could not add %s scores to the dedup cache: %s", len(scores), exc)


# No monitoring events for singles (three publishes per task in the worker's main process, a
# third of its time at one review per task); a lost singles task is answered by the API's 504.
@celery_app.task(name=SCORE_TEXTS, ignore_result=False, send_events=False)
def score_texts(
    texts: list[str],
    model: str | None = None,
    reply_to: str | None = None,
    batch: str | None = None,
    awaited_key: str | None = None,
) -> dict[str, Any] | None:
    """Score a micro-batch of /v1/score. With `reply_to` (the API's way) the answer, or the
    error, goes onto that Redis list; without it, to the result backend (one-off callers).
    A batch whose API stopped waiting (`awaited_key` gone) is not scored."""
    check_usable()
    if reply_to is None:
        return _score_texts(texts, model).model_dump()
    if awaited_key is not None and _too_late(batch, awaited_key):
        return None
    try:
        answer = _score_texts(texts, model)
    except Exception as exc:
        log.exception("singles batch %s failed", batch)
        answer = SinglesAnswer(error=f"{type(exc).__name__}: {exc}")
    replies.push(get_settings().broker_url, reply_to, batch or "", answer)
    return None


def _too_late(batch: str | None, awaited_key: str) -> bool:
    """Whether the API has stopped waiting for this batch, by Redis's clock (core/replies.py):
    neither this host's clock nor the API's decides, so a clock that jumped changes nothing."""
    if replies.still_awaited(get_settings().broker_url, awaited_key):
        return False
    log.warning("singles batch %s came after its caller stopped waiting: not scored", batch)
    event_counts.count(event_counts.SINGLES_BATCHES_LATE)
    return True


def _score_texts(texts: list[str], model: str | None) -> SinglesAnswer:
    scorer = get_scorer(model)
    scores = scorer.score(texts)
    return SinglesAnswer(
        model=scorer.info.name,
        model_version=scorer.info.version,
        device=scorer.device,
        p_positive=scores.p_positive.tolist(),
        truncated=scores.truncated.tolist(),
    )


def _deliver_soon(job_id: str) -> None:
    try:
        enqueue_delivery(job_id)
    except Exception:  # noqa: BLE001 - the sweeper sends every due delivery again
        log.warning("could not queue the delivery of job %s; the sweeper will", job_id)


@celery_app.task(name=DELIVER_RESULTS, ignore_result=True)
def deliver_results(job_id: str) -> bool:
    """PUTs a finished job's results to its result_url, if it has one and they are due."""
    return delivery.deliver(job_id, get_settings())


@celery_app.task(name=SWEEP, ignore_result=True)
def sweep() -> dict[str, int]:
    """Re-queues lost chunks, closes stalled uploads, completes and purges jobs."""
    report = sweeper.sweep(
        get_settings(),
        queue_is_empty=lambda: queue_depth(BULK_QUEUE) == 0,
        enqueue=enqueue_chunk,
        deliver=enqueue_delivery,
        send_webhooks=lambda: webhooks.send_due_in_background(get_settings()),
    )
    counts = report.counts()
    if any(counts.values()):
        log.warning("sweep: %s", json.dumps(counts))
    return counts
