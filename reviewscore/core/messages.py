"""The messages processes send each other through Redis besides Celery's own task messages,
typed once here: what a worker process reports (for /readyz and /metrics)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class WorkerReport(BaseModel):
    """A worker process's state, renewed every 30 s under redis_keys.WORKER_PREFIX + its name
    (celery_app.report_worker): its scoring device and the newest version of each model it has
    loaded, or the error that keeps it from scoring."""

    device: str | None = None
    models: dict[str, str] = {}
    error: str | None = None

    @property
    def state(self) -> Literal["ready", "failed", "loading"]:
        if self.error:
            return "failed"
        return "ready" if self.device else "loading"
