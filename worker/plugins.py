"""The worker's one seam for code that only tests install, as procrastinate's InMemoryConnector
stands in for a database: REVIEWSCORE_WORKER_PLUGIN names a factory ("module:function") that the
node calls once at start (reviewscore.testing.faults, the fault switches, is the one there is).
Unset, as in production, `installed` stays None and the scoring path calls nothing of it."""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from reviewscore.core.chunks import ChunkWork

log = logging.getLogger(__name__)

PLUGIN_ENV = "REVIEWSCORE_WORKER_PLUGIN"


class WorkerPlugin(Protocol):
    def wrap_scorer(self, scorer: Any) -> Any:
        """Stands between each scorer this process loads and its callers."""
        ...

    def before_scoring(self, work: ChunkWork, keeper: Callable[[], None]) -> None:
        """Runs once a chunk's cache lookup is done, before its rows are scored; `keeper`
        raises once the chunk's lease is lost."""
        ...

    def before_commit(self, work: ChunkWork) -> None:
        """Runs inside the chunk's completion transaction, its row locks held."""
        ...


installed: WorkerPlugin | None = None


def install_from_env(environ: Mapping[str, str] = os.environ) -> WorkerPlugin | None:
    """Installs the plugin REVIEWSCORE_WORKER_PLUGIN names, or none: in the node's main process,
    before its pool forks, so every pool process has it."""
    global installed
    spec = environ.get(PLUGIN_ENV, "")
    if not spec:
        installed = None
        return None
    module_name, _, factory_name = spec.partition(":")
    factory = getattr(importlib.import_module(module_name), factory_name or "install")
    installed = factory()
    log.warning("%s=%s: a plugin for tests is installed in this worker", PLUGIN_ENV, spec)
    return installed
