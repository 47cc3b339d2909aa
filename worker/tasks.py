"""The Celery tasks: score a chunk of a job, score a few texts for /v1/score, sweep lost work.

Start with: celery -A worker.tasks worker -Q singles,bulk
"""

from __future__ import annotations

import logging
import os
import socket
import time
from datetime import timedelta
from typing import Any

from celery.signals import worker_process_init, worker_process_shutdown

from reviewscore.core import jobs, worker_metrics
from reviewscore.core.celery_app import (
    BULK_QUEUE,
    SCORE_CHUNK,
    SCORE_TEXTS,
    SWEEP,
    celery_app,
    enqueue_chunk,
    forget_device,
    queue_depth,
    report_device,
)
from reviewscore.core.db import reset_engine_after_fork, session_scope
from reviewscore.core.model_registry import get_model
from reviewscore.core.schema import utcnow
from reviewscore.core.settings import get_settings
from worker.scoring import row_hashes, score_chunk_rows

log = logging.getLogger(__name__)
_scorers: dict[str, Any] = {}

__all__ = ["celery_app", "score_chunk", "score_texts", "sweep"]


def _tf_threads() -> int:
    settings = get_settings()
    if settings.tf_threads:
        return settings.tf_threads
    return max(1, (os.cpu_count() or 1) // settings.worker_processes)


def get_scorer(name: str | None) -> Any:
    """The scorer for a model, loaded once per process."""
    settings = get_settings()
    key = name or settings.default_model or ""
    if key not in _scorers:
        from reviewscore.model.scorer import load_scorer

        info = get_model(settings.models_dir, name, settings.default_model)
        if info.name in _scorers:
            # The default model, asked for by its name (or the other way round): load it once.
            _scorers[key] = _scorers[info.name]
            return _scorers[key]
        started = time.perf_counter()
        _scorers[key] = _scorers[info.name] = load_scorer(
            info, batch_size=settings.score_batch_size
        )
        log.info(
            "loaded model %s (%s) on %s in %.1fs",
            info.name,
            info.version,
            _scorers[key].device,
            time.perf_counter() - started,
        )
    return _scorers[key]


@worker_process_init.connect
def _init_process(**_: Any) -> None:
    # Runs in each pool process after fork: TensorFlow and DB connections are made here,
    # never in the parent, so no process inherits another's threads or sockets.
    reset_engine_after_fork()
    from reviewscore.model.scorer import configure_threads

    threads = _tf_threads()
    configure_threads(threads, min(2, threads))
    scorer = get_scorer(None)
    try:
        report_device(_process_name(), scorer.device)
    except Exception:  # noqa: BLE001 - Redis briefly away: /readyz just shows no device yet
        log.warning("could not report the scoring device to Redis", exc_info=True)


def _process_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@worker_process_shutdown.connect
def _forget_process(**_: Any) -> None:
    try:
        forget_device(_process_name())
    except Exception:  # noqa: BLE001 - the key expires by itself
        pass


def _observe(path: str, batch_size: int, seconds: float) -> None:
    try:
        worker_metrics.observe(path, batch_size, seconds)
    except Exception:  # noqa: BLE001 - metrics must never fail a chunk
        log.debug("could not record scoring metrics", exc_info=True)


@celery_app.task(name=SCORE_CHUNK, ignore_result=True)
def score_chunk(job_id: str, seq: int) -> None:
    settings = get_settings()
    started = time.perf_counter()
    with session_scope() as session:
        work = jobs.claim_chunk(
            session,
            job_id,
            seq,
            lease_s=settings.chunk_lease_s,
            max_attempts=settings.chunk_max_attempts,
        )
    if work is None:
        return
    try:
        scorer = get_scorer(work.model_name)
        if scorer.info.version != work.model_version:
            reason = (
                f"model version {work.model_version} is no longer installed "
                f"(installed: {scorer.info.version})"
            )
            results = [jobs.RowResult(r.row_num, None, False, reason) for r in work.rows]
            with session_scope() as session:
                jobs.complete_chunk(session, job_id, seq, results)
            return
        claimed = time.perf_counter()
        hashes = row_hashes(work)
        with session_scope(readonly=True) as session:
            cached = jobs.cached_scores(session, work.model_version, list(hashes.values()))
        looked_up = time.perf_counter()
        outcome = score_chunk_rows(scorer, work, hashes, cached)
        scored = time.perf_counter()
        with session_scope() as session:
            jobs.remember_scores(session, work.model_version, outcome.new_scores)
            jobs.complete_chunk(session, job_id, seq, outcome.results, device=scorer.device)
        if outcome.scored_now:
            _observe("bulk", outcome.scored_now, scored - looked_up)
        # Where a chunk's time goes (the benchmark reads these): SQL phases versus the model.
        log.info(
            "chunk %s/%s: %d rows, %d scored, %d from cache; "
            "claim %.3fs, lookup %.3fs, score %.3fs, write %.3fs",
            job_id,
            seq,
            len(work.rows),
            outcome.scored_now,
            outcome.from_cache,
            claimed - started,
            looked_up - claimed,
            scored - looked_up,
            time.perf_counter() - scored,
        )
    except Exception as exc:
        log.exception("chunk %s/%s failed on attempt %s", job_id, seq, work.attempt)
        with session_scope() as session:
            jobs.record_chunk_error(session, job_id, seq, f"{type(exc).__name__}: {exc}")
        # Back to the queue; claim_chunk fails the rows once the attempts are used up.
        celery_app.send_task(
            SCORE_CHUNK, args=[job_id, seq], queue=BULK_QUEUE, countdown=min(30, 2**work.attempt)
        )


@celery_app.task(name=SCORE_TEXTS, ignore_result=False)
def score_texts(texts: list[str], model: str | None = None) -> dict[str, Any]:
    scorer = get_scorer(model)
    started = time.perf_counter()
    scores = scorer.score(texts)
    _observe("singles", len(texts), time.perf_counter() - started)
    return {
        "model": scorer.info.name,
        "model_version": scorer.info.version,
        "device": scorer.device,
        "p_positive": [float(p) for p in scores.p_positive],
        "truncated": [bool(t) for t in scores.truncated],
    }


@celery_app.task(name=SWEEP, ignore_result=True)
def sweep() -> dict[str, int]:
    """Re-queues lost chunks, fails stalled uploads and purges jobs past retention."""
    settings = get_settings()
    now = utcnow()
    with session_scope() as session:
        expired = jobs.expired_running_chunks(session, now)
        stalled = jobs.fail_stalled_uploads(
            session, now - timedelta(seconds=settings.upload_stall_s)
        )
        purged = jobs.purge_old_jobs(session, now - timedelta(days=settings.job_retention_days))
    lost: list[tuple[str, int]] = []
    # A queued chunk's message can only be lost if nothing is waiting in the queue any more.
    if queue_depth(BULK_QUEUE) == 0:
        with session_scope() as session:
            lost = jobs.stale_queued_chunks(
                session, now - timedelta(seconds=settings.queued_grace_s)
            )
    for job_id, seq in expired + lost:
        enqueue_chunk(job_id, seq)
    if expired or lost or stalled or purged:
        log.warning(
            "sweep: re-queued %d expired and %d lost chunks, failed %d stalled uploads, "
            "purged %d old jobs",
            len(expired),
            len(lost),
            len(stalled),
            len(purged),
        )
    return {
        "expired": len(expired),
        "lost": len(lost),
        "stalled": len(stalled),
        "purged": len(purged),
    }
