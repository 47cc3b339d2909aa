"""Scoring one or a few reviews right away, through the workers' singles queue."""

from __future__ import annotations

from typing import Any

import anyio
from celery.exceptions import TimeoutError as CeleryTimeout
from fastapi import APIRouter, Depends, Request

from api.auth import current_key_id
from api.batcher import MicroBatcher
from api.schemas import ScoreRequest, ScoreResponse, ScoreResult, error_responses
from reviewscore.core.celery_app import SCORE_TEXTS, SINGLES_QUEUE, celery_app
from reviewscore.core.db import session_scope
from reviewscore.core.errors import BadRequestError, ScoringTimeoutError, ServiceUnavailableError
from reviewscore.core.ingest import is_valid_unicode
from reviewscore.core.model_registry import get_model
from reviewscore.core.settings import get_settings

router = APIRouter(prefix="/v1", tags=["score"])


def check_model(name: str) -> None:
    """Raises UnknownModelError (422) unless the model is published."""
    with session_scope(readonly=True) as session:
        get_model(session, name, get_settings().default_model)


async def send_to_workers(texts: list[str], model: str | None) -> dict[str, Any]:
    settings = get_settings()
    try:
        result = celery_app.send_task(
            SCORE_TEXTS,
            args=[texts, model],
            queue=SINGLES_QUEUE,
            expires=settings.singles_timeout_s,
        )
    except Exception as exc:  # noqa: BLE001 - whatever the reason, the task was not queued
        # While Redis restarts, kombu's producer can also fail with an AttributeError from a
        # channel it is reconnecting (seen in tests/multihost): the request was not queued.
        raise ServiceUnavailableError(
            f"Redis (the task queue) did not take the request ({type(exc).__name__}); "
            "try again shortly"
        ) from exc

    def wait() -> dict[str, Any]:
        try:
            answer: dict[str, Any] = result.get(timeout=settings.singles_timeout_s)
            return answer
        except CeleryTimeout as exc:
            raise ScoringTimeoutError(
                f"no worker answered within {settings.singles_timeout_s:.0f}s; "
                "check that a worker runs (GET /readyz)"
            ) from exc
        finally:
            result.forget()

    return await anyio.to_thread.run_sync(wait)


def batcher_of(request: Request) -> MicroBatcher:
    batcher: MicroBatcher | None = getattr(request.app.state, "batcher", None)
    if batcher is None:
        settings = get_settings()
        batcher = MicroBatcher(
            send_to_workers,
            wait_s=settings.singles_batch_wait_ms / 1000,
            max_size=settings.singles_batch_max,
        )
        request.app.state.batcher = batcher
    return batcher


@router.post("/score", response_model=ScoreResponse, responses=error_responses(400, 422, 503, 504))
async def score(
    body: ScoreRequest, request: Request, _owner: int | None = Depends(current_key_id)
) -> ScoreResponse:
    settings = get_settings()
    if len(body.reviews) > settings.max_reviews_per_request:
        raise BadRequestError(
            f"{len(body.reviews)} reviews in one call; the limit is "
            f"{settings.max_reviews_per_request} (upload a CSV to POST /v1/jobs for more)"
        )
    for i, text in enumerate(body.reviews):
        if not text.replace("\x00", "").strip():
            raise BadRequestError(f"review {i} is empty")
        if not is_valid_unicode(text):
            raise BadRequestError(f"review {i} holds a lone surrogate (invalid Unicode)")
        if len(text.encode("utf-8")) > settings.max_text_bytes:
            raise BadRequestError(
                f"review {i} is over the limit of {settings.max_text_bytes:,} bytes"
            )
    if body.model:
        await anyio.to_thread.run_sync(check_model, body.model)
    texts = [t.replace("\x00", "") for t in body.reviews]
    answer = await batcher_of(request).score(texts, body.model)
    return ScoreResponse(
        model=answer["model"],
        model_version=answer["model_version"],
        results=[
            ScoreResult(p_positive=p, label="positive" if p >= 0.5 else "negative", truncated=t)
            for p, t in zip(answer["p_positive"], answer["truncated"], strict=True)
        ],
    )
