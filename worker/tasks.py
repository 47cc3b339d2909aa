"""The Celery tasks: score a chunk of a job, score a few texts for /v1/score, sweep lost work.

Start with: celery -A worker.tasks worker -Q singles,bulk
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from collections import OrderedDict
from typing import Any

from celery import Task
from celery.exceptions import Reject
from celery.signals import celeryd_init, worker_init, worker_process_init, worker_process_shutdown
from sqlalchemy.exc import DBAPIError

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
    forget_worker,
    queue_depth,
    report_worker,
)
from reviewscore.core.db import reset_engine_after_fork, session_scope, single_statement
from reviewscore.core.messages import SinglesAnswer, WorkerReport
from reviewscore.core.model_registry import ModelInfo, artifact_path, get_model, get_version
from reviewscore.core.processes import die_with_parent
from reviewscore.core.settings import get_settings
from worker import cache
from worker.scoring import hold, hold_point, row_hashes, score_chunk_rows

log = logging.getLogger(__name__)
# Scorers loaded in this process, by model version, least recently used first (at most
# REVIEWSCORE_WORKER_MODEL_CACHE of them); the current version of each model name.
_scorers: OrderedDict[str, Any] = OrderedDict()
_current: dict[str, tuple[float, ModelInfo]] = {}
REGISTRY_REFRESH_S = 10.0
# Set when this pool process could not load its model: it then takes no work.
_unusable: str | None = None
# What this process tells /readyz (device, the version of each model it serves new work with,
# or its error), sent again every REPORT_EVERY_S with a TTL of three times that, so a process
# that died without a word drops out of /readyz within REPORT_EVERY_S * 3.
_state: dict[str, Any] = {}
REPORT_EVERY_S = 30.0
# The newest version of each model name loaded here: (generation, version).
_newest: dict[str, tuple[int, str]] = {}
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


def resolve_model(name: str | None, version: str | None = None) -> ModelInfo:
    """A pinned version as published, or the current version of a model (re-read at most every
    REGISTRY_REFRESH_S, so a newly published version reaches singles without a restart)."""
    settings = get_settings()
    key = name or ""
    known = _current.get(key)
    if version is None and known is not None and time.monotonic() - known[0] < REGISTRY_REFRESH_S:
        return known[1]
    try:
        with session_scope(readonly=True) as session:
            if version is not None:
                return get_version(session, name or "", version)
            info = get_model(session, name, settings.default_model)
    except DBAPIError:
        if version is None and known is not None:
            # The registry (the database) is away for now: single reviews keep being scored
            # with the version this process already serves, instead of failing.
            return known[1]
        raise
    _current[key] = (time.monotonic(), info)
    return info


def get_scorer(name: str | None, version: str | None = None) -> Any:
    """The scorer for a model version, loaded once per process from the shared registry (the
    artifact is fetched and cached on this host by its sha256)."""
    if version is not None and version in _scorers:
        _scorers.move_to_end(version)
        return _scorers[version]
    info = resolve_model(name, version)
    if info.version in _scorers:
        _scorers.move_to_end(info.version)
    else:
        from reviewscore.model.scorer import load_scorer

        settings = get_settings()
        started = time.perf_counter()
        path = artifact_path(info, settings.var_dir / "model-cache")
        scorer = load_scorer(info.model_copy(update={"path": path}), settings.score_batch_size)
        _scorers[info.version] = scorer
        _forget_least_used(settings.worker_model_cache)
        log.info(
            "loaded model %s on %s in %.1fs",
            info.version,
            scorer.device,
            time.perf_counter() - started,
        )
    _note_serving(info)
    return _scorers[info.version]


def _forget_least_used(keep: int) -> None:
    """Jobs pinned to old versions would otherwise leave every version ever used in memory
    (a model is tens to hundreds of MB): past `keep`, the least recently used one goes, and a
    later job pinned to it loads it again from the host's artifact cache."""
    while len(_scorers) > keep:
        version, _ = _scorers.popitem(last=False)
        log.info("unloaded model %s (REVIEWSCORE_WORKER_MODEL_CACHE=%d)", version, keep)


@worker_init.connect
def _check_registry(**_: Any) -> None:
    """In the worker's main process, before any pool process starts: the default model must be
    obtainable from the registry (published, artifact intact). Otherwise the node refuses to
    start (a non-zero exit) instead of taking chunks it cannot score. No TensorFlow here."""
    try:
        info = resolve_model(None)
        artifact_path(info, get_settings().var_dir / "model-cache")
    except Exception as exc:  # noqa: BLE001 - any reason is fatal, and said in one line
        log.critical("this worker cannot get its model, so it takes no work: %s", exc)
        # SystemExit passes through Celery's signal dispatch (which logs and swallows Exception).
        raise SystemExit(f"reviewscore worker: cannot get the default model: {exc}") from exc


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
    try:
        scorer = get_scorer(None)
    except Exception as exc:  # noqa: BLE001 - refuse work below, whatever the reason
        _refuse_work(f"{type(exc).__name__}: {exc}")
        return
    _report({"device": scorer.device, "models": {scorer.info.name: scorer.info.version}})


def _refuse_work(reason: str) -> None:
    """The model did not load in this pool process: hand every task back (see _usable) and stop
    the worker node, loudly, so no chunk is given to a process that cannot score it."""
    global _unusable
    _unusable = reason
    log.critical("model load failed in %s: %s; stopping this worker", _process_name(), reason)
    _report({"device": None, "models": {}, "error": reason})
    os.kill(os.getppid(), signal.SIGTERM)


def _usable() -> None:
    if _unusable is not None:
        # Back to the queue (not acknowledged as done): another worker takes it.
        raise Reject(f"this worker cannot score: {_unusable}", requeue=True)


def _report(state: dict[str, Any]) -> None:
    first = not _state
    _state.clear()
    _state.update(state)
    _send_report()
    if first:
        threading.Thread(target=_keep_reporting, name="report-worker", daemon=True).start()


def _note_serving(info: ModelInfo) -> None:
    """/readyz shows the newest version of each model this process has loaded: a newly published
    one once a job pinned to it (or a single review) reaches this process; a job still pinned to
    an older one does not turn it back."""
    newest = _newest.get(info.name)
    if newest is not None and newest[0] >= info.generation:
        return
    _newest[info.name] = (info.generation, info.version)
    models = _state.get("models")
    if models is not None and models.get(info.name) != info.version:
        _state["models"] = {**models, info.name: info.version}
        _send_report()


def _send_report() -> None:
    try:
        report = WorkerReport.model_validate(_state)
        report_worker(_process_name(), report, ttl_s=int(REPORT_EVERY_S * 3))
    except Exception:  # noqa: BLE001 - Redis briefly away: /readyz just shows no device yet
        log.warning("could not report this worker's state to Redis", exc_info=True)


def _keep_reporting() -> None:
    while True:
        time.sleep(REPORT_EVERY_S)
        _send_report()


def _process_name() -> str:
    """Who claims a chunk: "<node name>:<pid>" (see reviewscore.core.chunks)."""
    return f"{_node['name'] or socket.gethostname()}:{os.getpid()}"


@worker_process_shutdown.connect
def _forget_process(**_: Any) -> None:
    if _unusable is not None:
        return  # its error stays on /readyz until the report's TTL runs out: a person sees it
    try:
        forget_worker(_process_name())
    except Exception:  # noqa: BLE001 - the key expires by itself
        pass


def _backoff(tries: int, cap: float = 10.0) -> float:
    return float(min(cap, 2**tries))


class LeaseKeeper:
    """Keeps a claimed chunk's lease on a timer from the claim on: a daemon thread renews it every
    third of the lease, whatever the scorer does meanwhile (a model load, one long call), so only
    a silent worker loses its chunk. Calling the keeper raises ChunkLostError once a renewal found
    the chunk no longer ours; `confirm` renews once more before the results are written."""

    # The shortest wait between renewals: a zero lease (tests) must not spin the thread.
    MIN_EVERY_S = 0.05

    def __init__(self, work: chunks.ChunkWork, lease_s: float) -> None:
        self.work = work
        self.lease_s = lease_s
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._keep, name=f"lease-{work.job_id}/{work.seq}", daemon=True
        )

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _keep(self) -> None:
        every = max(self.lease_s / 3, self.MIN_EVERY_S)
        while not self._stop.wait(every):
            try:
                renewed = chunks.renew_lease(self.work, self.lease_s)
            except Exception:  # noqa: BLE001 - the database is away: try again next tick
                log.warning("chunk %s/%s: could not renew its lease", *self._key(), exc_info=True)
                continue
            if not renewed:
                self.lost.set()
                return

    def _key(self) -> tuple[str, int]:
        return self.work.job_id, self.work.seq

    def __call__(self) -> None:
        if self.lost.is_set():
            raise ChunkLostError("chunk {}/{} is no longer ours".format(*self._key()))

    def confirm(self) -> None:
        """Before writing: the chunk must still be ours (a stale attempt stops here)."""
        self()
        if not chunks.renew_lease(self.work, self.lease_s):
            self.lost.set()
            self()


@celery_app.task(name=SCORE_CHUNK, bind=True, ignore_result=True, max_retries=None)
def score_chunk(self: Task, job_id: str, seq: int) -> None:
    _usable()
    settings = get_settings()
    started = time.perf_counter()
    try:
        # The message says that a chunk is queued, not which is next: the claim takes the next
        # in fair order between keys (core/fair_share.py), maybe another job's.
        work = chunks.claim_next(
            self.request.id,
            lease_s=settings.chunk_lease_s,
            max_attempts=settings.chunk_max_attempts,
            worker=_process_name(),
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


def slow_down(seconds: float, keeper: LeaseKeeper) -> None:
    """The test-only switch REVIEWSCORE_SCORE_DELAY_S (0 unless set): a slower model's extra
    time, in slices, stopping early once the keeper found the lease lost."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.5))
        keeper()


def _score_and_write(work: chunks.ChunkWork, started: float, keeper: LeaseKeeper) -> None:
    settings = get_settings()
    # The version the job is pinned to, whatever this host had installed: the registry has it.
    scorer = get_scorer(work.model_name, work.model_version)
    jobs.mark_started(work.job_id, scorer.device)
    claimed = time.perf_counter()
    hashes = row_hashes(work)
    with session_scope(readonly=True) as session:
        cached = cache.cached_scores(session, work.model_version, list(hashes.values()))
    looked_up = time.perf_counter()
    held = hold_point(work)  # test-only fault switches: both off unless set
    hold(work, held, "score")
    slow_down(settings.score_delay_s, keeper)
    outcome = score_chunk_rows(scorer, work, hashes, cached, keeper)
    keeper.confirm()
    scored = time.perf_counter()
    with session_scope() as session:
        written = chunks.complete_chunk(session, work, outcome.results)
        hold(work, held, "commit")
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
    _usable()
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
