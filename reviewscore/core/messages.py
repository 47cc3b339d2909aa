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


class SinglesAnswer(BaseModel):
    """A worker's answer to one micro-batch of POST /v1/score, pushed onto the reply list of
    the API process that sent it (core/replies.py): the scores in the order of the texts sent,
    or the error that kept the worker from scoring them."""

    model: str = ""
    model_version: str = ""
    device: str | None = None
    p_positive: list[float] = []
    truncated: list[bool] = []
    error: str | None = None

    def part(self, start: int, end: int) -> SinglesAnswer:
        """The answer for texts[start:end] of the batch (one request's share of it)."""
        return self.model_copy(
            update={
                "p_positive": self.p_positive[start:end],
                "truncated": self.truncated[start:end],
            }
        )
