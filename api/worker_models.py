"""The workers' models for /readyz: what each worker process reported to Redis (its device and
the newest version of each model it has loaded, or the error that stopped it loading), and
whether the fleet is degraded: a process reports a model error, or processes report different
versions of one model (after `reviewscore models publish`, until each process has taken work
pinned to the new version; jobs are unaffected, each is scored with the version it is pinned
to, fetched from the registry by whichever worker takes it)."""

from __future__ import annotations

from pydantic import BaseModel

from reviewscore.core.messages import WorkerReport

# What /readyz shows of each worker process is what it reported (core/messages.py).
WorkerModelState = WorkerReport


class WorkerModels(BaseModel):
    degraded: bool
    workers: dict[str, WorkerModelState]
    problems: list[str]


def worker_models(reported: dict[str, WorkerReport]) -> WorkerModels:
    """Summarizes `reviewscore.core.celery_app.reported_workers()` ("<node>@<host>:<pid>" -> state)."""
    workers = dict(reported)
    problems = [
        f"worker {name} cannot score: {state.error}"
        for name, state in sorted(workers.items())
        if state.error
    ]
    versions: dict[str, dict[str, list[str]]] = {}
    for name, state in sorted(workers.items()):
        for model, version in state.models.items():
            versions.setdefault(model, {}).setdefault(version, []).append(name)
    for model, found in sorted(versions.items()):
        if len(found) > 1:
            where = "; ".join(f"{v} on {', '.join(names)}" for v, names in sorted(found.items()))
            problems.append(f"workers serve different versions of {model}: {where}")
    return WorkerModels(degraded=bool(problems), workers=workers, problems=problems)
