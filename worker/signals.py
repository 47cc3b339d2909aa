"""The worker's Celery signal handlers: the node's start (its registry check, the previous run's
claims handed back) and each pool process's start (the model loaded after fork) and end."""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

from celery.signals import (
    after_setup_logger,
    celeryd_init,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
)

from reviewscore.core import chunks
from reviewscore.core.celery_app import enqueue_chunk
from reviewscore.core.db import reset_engine_after_fork
from reviewscore.core.model_registry import artifact_path
from reviewscore.core.processes import die_with_parent
from reviewscore.core.settings import get_settings
from worker import plugins, readiness
from worker.models_cache import get_scorer, resolve_model

log = logging.getLogger(__name__)


def _tf_threads() -> int:
    settings = get_settings()
    if settings.tf_threads:
        return settings.tf_threads
    return max(1, (os.cpu_count() or 1) // settings.worker_processes)


# Celery's own line for each task received and each task succeeded (INFO): two lines for every
# micro-batch of POST /v1/score (6,469 in one user's wrk run of `make run`), and chunks have their
# own `chunk_written` record. Failures, retries given up and rejections still log (WARNING and
# up).
QUIET_LOGGERS = ("celery.worker.strategy", "celery.app.trace")


@after_setup_logger.connect
def _quiet_task_lines(**_: Any) -> None:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


@worker_init.connect
def _install_plugin(**_: Any) -> None:
    """In the worker's main process, before its pool forks: the plugin for tests that
    REVIEWSCORE_WORKER_PLUGIN names, if any (worker/plugins.py). One that cannot be installed
    stops the node, as a missing model does, rather than let a test run without its faults."""
    try:
        plugins.install_from_env()
    except Exception as exc:  # noqa: BLE001 - any reason is fatal, and said in one line
        log.critical("cannot install the worker plugin: %s", exc)
        raise SystemExit(f"reviewscore worker: cannot install its plugin: {exc}") from exc


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
    readiness.node.update(name=sender, pid=os.getpid())
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
    die_with_parent(signal.SIGKILL, parent_pid=readiness.node["pid"])
    reset_engine_after_fork()
    from reviewscore.model.scorer import configure_threads

    threads = _tf_threads()
    configure_threads(threads, min(2, threads))
    try:
        scorer = get_scorer(None)
    except Exception as exc:  # noqa: BLE001 - refuse work below, whatever the reason
        # Celery only logs an exception raised here and gives the process work anyway: the
        # process marks itself unusable and stops its node instead.
        readiness.refuse_work(f"{type(exc).__name__}: {exc}")
        return
    readiness.report({"device": scorer.device, "models": {scorer.info.name: scorer.info.version}})


@worker_process_shutdown.connect
def _forget_process(**_: Any) -> None:
    readiness.forget()
