"""The scorers this worker process has loaded, by model version, and the registry lookups that
say which version a model name means now."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any

from sqlalchemy.exc import DBAPIError

from reviewscore.core.db import session_scope
from reviewscore.core.model_registry import ModelInfo, artifact_path, get_model, get_version
from reviewscore.core.settings import get_settings
from worker import plugins
from worker.readiness import note_serving

log = logging.getLogger(__name__)
# Scorers loaded in this process, by model version, least recently used first (at most
# REVIEWSCORE_WORKER_MODEL_CACHE of them); the current version of each model name.
_scorers: OrderedDict[str, Any] = OrderedDict()
_current: dict[str, tuple[float, ModelInfo]] = {}
REGISTRY_REFRESH_S = 10.0


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
        if plugins.installed is not None:  # tests only (worker/plugins.py)
            scorer = plugins.installed.wrap_scorer(scorer)
        _scorers[info.version] = scorer
        _forget_least_used(settings.worker_model_cache)
        log.info(
            "loaded model %s on %s in %.1fs",
            info.version,
            scorer.device,
            time.perf_counter() - started,
        )
    note_serving(info)
    return _scorers[info.version]


def _forget_least_used(keep: int) -> None:
    """Jobs pinned to old versions would otherwise leave every version ever used in memory
    (a model is tens to hundreds of MB): past `keep`, the least recently used one goes, and a
    later job pinned to it loads it again from the host's artifact cache."""
    while len(_scorers) > keep:
        version, _ = _scorers.popitem(last=False)
        log.info("unloaded model %s (REVIEWSCORE_WORKER_MODEL_CACHE=%d)", version, keep)
