"""The Celery tasks: score a chunk of a job, score a few texts for /v1/score, sweep lost work.

Start with: celery -A worker.tasks worker -Q singles,bulk
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import time
from typing import Any

from celery import Task
from celery.signals import celeryd_init, worker_process_init, worker_process_shutdown
from sqlalchemy.exc import DBAPIError

from reviewscore.core import chunks, jobs, sweeper
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
from reviewscore.core.processes import die_with_parent
from reviewscore.core.settings import get_settings
from worker import cache
from worker.scoring import row_hashes, score_chunk_rows

log = logging.getLogger(__name__)
_scorers: dict[str, Any] = {}
# This node's Celery name and main process, set in the main process before the pool forks.
_node: dict[str, Any] = {"name": None, "pid": None}

__all__ = ["celery_app", "score_chunk", "score_texts", "sweep"]


class ChunkLostError(Exception):
    """This attempt no longer holds its chunk: another claim took it, or its job was cancelled."""


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


@celeryd_init.connect
def _init_node(sender: str | None = None, **_: Any) -> None:
    """The node starts (main process, before its pool and before it takes any message): chunks
    still claimed under its name come from its previous run, which died (a power loss, a
    SIGKILL); hand them back now rather than after their lease runs out."""
    _node.update(name=sender, pid=os.getpid())
    if not sender:
        return
    try:
        released = chunks.release_claims(f"{sender}:")
    except Exception:  # noqa: BLE001 - the database is away: the leases run out instead
        log.warning("could not hand back the previous run's chunks", exc_info=True)
        return
    for job_id, seq in released:
        try:
            enqueue_chunk(job_id, seq)
        except Exception:  # noqa: BLE001 - left queued: the sweeper sends it again
            log.warning("could not re-send chunk %s/%s", job_id, seq, exc_info=True)
    if released:
        log.warning("handed back %d chunk(s) claimed by this node's previous run", len(released))


@worker_process_init.connect
def _init_process(**_: Any) -> None:
    # Runs in each pool process after fork: TensorFlow and DB connections are made here,
    # never in the parent, so no process inherits another's threads or sockets.
    # A pool process whose node is gone (SIGKILLed) can no longer acknowledge anything: it
    # goes too, instead of scoring on as an orphan.
    die_with_parent(signal.SIGKILL, parent_pid=_node["pid"])
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
    """Who claims a chunk: "<node name>:<pid>" (see reviewscore.core.chunks)."""
    return f"{_node['name'] or socket.gethostname()}:{os.getpid()}"


@worker_process_shutdown.connect
def _forget_process(**_: Any) -> None:
    try:
        forget_device(_process_name())
    except Exception:  # noqa: BLE001 - the key expires by itself
        pass


def _backoff(tries: int, cap: float = 10.0) -> float:
    return float(min(cap, 2**tries))


class LeaseKeeper:
    """Renews the chunk's lease between batches (at most every quarter lease), so only a silent
    worker loses its chunk; raises ChunkLostError once the chunk is no longer ours."""

    def __init__(self, work: chunks.ChunkWork, lease_s: float) -> None:
        self.work = work
        self.lease_s = lease_s
        self.renewed = time.monotonic()

    def __call__(self) -> None:
        if time.monotonic() - self.renewed < self.lease_s / 4:
            return
        if not chunks.renew_lease(self.work, self.lease_s):
            raise ChunkLostError(f"chunk {self.work.job_id}/{self.work.seq} is no longer ours")
        self.renewed = time.monotonic()


@celery_app.task(name=SCORE_CHUNK, bind=True, ignore_result=True, max_retries=None)
def score_chunk(self: Task, job_id: str, seq: int) -> None:
    settings = get_settings()
    started = time.perf_counter()
    try:
        work = chunks.claim_chunk(
            job_id,
            seq,
            lease_s=settings.chunk_lease_s,
            max_attempts=settings.chunk_max_attempts,
            worker=_process_name(),
        )
    except DBAPIError as exc:
        # The database is unreachable: nothing was claimed. Retrying (not acknowledging the
        # message as done) keeps the chunk in the queue; no attempt is spent.
        log.warning("chunk %s/%s: cannot claim (%s); retrying", job_id, seq, exc.__class__.__name__)
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc
    if work is None:
        # A redelivery of a finished chunk, or one of a cancelled or deleted job.
        log.info("chunk_skipped %s", json.dumps({"job": job_id, "seq": seq}))
        return
    try:
        _score_and_write(work, started)
    except ChunkLostError:
        log.warning("chunk %s/%s attempt %s: lost its lease; stopped", job_id, seq, work.attempt)
    except Exception as exc:
        log.exception("chunk %s/%s failed on attempt %s", job_id, seq, work.attempt)
        try:
            chunks.hand_back(work, f"{type(exc).__name__}: {exc}")
        except Exception:  # noqa: BLE001 - the lease runs out and the sweeper hands it back
            log.warning("chunk %s/%s: could not hand it back", job_id, seq, exc_info=True)
        # Claim it again later; the claim counts the attempt and gives up past the cap.
        raise self.retry(exc=exc, countdown=_backoff(work.attempt, cap=30)) from exc


def _score_and_write(work: chunks.ChunkWork, started: float) -> None:
    settings = get_settings()
    scorer = get_scorer(work.model_name)
    if scorer.info.version != work.model_version:
        reason = (
            f"model version {work.model_version} is no longer installed "
            f"(installed: {scorer.info.version})"
        )
        with session_scope() as session:
            chunks.complete_chunk(
                session, work, [chunks.RowResult(r.row_num, None, False, reason) for r in work.rows]
            )
        jobs.try_complete(work.job_id)
        return
    jobs.mark_started(work.job_id, scorer.device)
    claimed = time.perf_counter()
    hashes = row_hashes(work)
    with session_scope(readonly=True) as session:
        cached = cache.cached_scores(session, work.model_version, list(hashes.values()))
    looked_up = time.perf_counter()
    outcome = score_chunk_rows(
        scorer, work, hashes, cached, LeaseKeeper(work, settings.chunk_lease_s)
    )
    scored = time.perf_counter()
    with session_scope() as session:
        written = chunks.complete_chunk(session, work, outcome.results)
        if written:
            cache.remember_scores(session, work.model_version, outcome.new_scores)
    if written:
        jobs.try_complete(work.job_id)
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
                "write_s": round(time.perf_counter() - scored, 4),
            }
        ),
    )


@celery_app.task(name=SCORE_TEXTS, ignore_result=False)
def score_texts(texts: list[str], model: str | None = None) -> dict[str, Any]:
    scorer = get_scorer(model)
    scores = scorer.score(texts)
    return {
        "model": scorer.info.name,
        "model_version": scorer.info.version,
        "device": scorer.device,
        "p_positive": [float(p) for p in scores.p_positive],
        "truncated": [bool(t) for t in scores.truncated],
    }


@celery_app.task(name=SWEEP, ignore_result=True)
def sweep() -> dict[str, int]:
    """Re-queues lost chunks, closes stalled uploads, completes and purges jobs."""
    report = sweeper.sweep(
        get_settings(),
        queue_is_empty=lambda: queue_depth(BULK_QUEUE) == 0,
        enqueue=enqueue_chunk,
    )
    counts = report.counts()
    if any(counts.values()):
        log.warning("sweep: %s", json.dumps(counts))
    return counts
