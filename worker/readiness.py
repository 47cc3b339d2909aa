"""Who this worker process is and what it tells /readyz: its device, the version of each model it
serves new work with, or the error that keeps it out of work."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from typing import Any

from celery.exceptions import Reject

from reviewscore.core.celery_app import forget_worker, report_worker
from reviewscore.core.messages import WorkerReport
from reviewscore.core.model_registry import ModelInfo

log = logging.getLogger(__name__)
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
node: dict[str, Any] = {"name": None, "pid": None}


def refuse_work(reason: str) -> None:
    """The model did not load in this pool process: hand every task back (see check_usable) and
    stop the worker node, loudly, so no chunk is given to a process that cannot score it."""
    global _unusable
    _unusable = reason
    log.critical("model load failed in %s: %s; stopping this worker", process_name(), reason)
    report({"device": None, "models": {}, "error": reason})
    os.kill(os.getppid(), signal.SIGTERM)


def check_usable() -> None:
    if _unusable is not None:
        # Back to the queue (not acknowledged as done): another worker takes it.
        raise Reject(f"this worker cannot score: {_unusable}", requeue=True)


def report(state: dict[str, Any]) -> None:
    first = not _state
    _state.clear()
    _state.update(state)
    _send_report()
    if first:
        threading.Thread(target=_keep_reporting, name="report-worker", daemon=True).start()


def note_serving(info: ModelInfo) -> None:
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
        state = WorkerReport.model_validate(_state)
        report_worker(process_name(), state, ttl_s=int(REPORT_EVERY_S * 3))
    except Exception:  # noqa: BLE001 - Redis briefly away: /readyz just shows no device yet
        log.warning("could not report this worker's state to Redis", exc_info=True)


def _keep_reporting() -> None:
    while True:
        time.sleep(REPORT_EVERY_S)
        _send_report()


def process_name() -> str:
    """Who claims a chunk: "<node name>:<pid>" (see reviewscore.core.chunks)."""
    return f"{node['name'] or socket.gethostname()}:{os.getpid()}"


def forget() -> None:
    """This pool process ends: its report goes from /readyz, unless it holds its error."""
    if _unusable is not None:
        return  # its error stays on /readyz until the report's TTL runs out: a person sees it
    try:
        forget_worker(process_name())
    except Exception:  # noqa: BLE001 - the key expires by itself
        pass
