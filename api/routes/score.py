"""Scoring one or a few reviews right away, through the workers' singles queue."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from api.auth import auth_enabled, bearer, current_key_id
from api.batcher import MicroBatcher
from api.schemas import ScoreRequest, ScoreResponse, error_responses
from api.singles import WorkerChannel
from reviewscore.core.db import session_scope
from reviewscore.core.errors import BadRequestError
from reviewscore.core.ingest import is_valid_unicode
from reviewscore.core.messages import SinglesAnswer
from reviewscore.core.model_registry import get_model
from reviewscore.core.results import label_of
from reviewscore.core.settings import Settings, get_settings

router = APIRouter(prefix="/v1", tags=["score"])


async def check_caller(request: Request) -> None:
    """api.auth's key check, called from the handler rather than as a dependency: FastAPI's
    dependency solving was 18 % of the API's time on this path under load (py-spy). With auth
    off (development) it costs nothing; on, the key lookup runs in the thread pool."""
    if auth_enabled():
        await run_in_threadpool(current_key_id, request, await bearer(request))


def batcher_of(request: Request) -> MicroBatcher:
    batcher: MicroBatcher | None = getattr(request.app.state, "batcher", None)
    if batcher is None:
        settings = get_settings()
        channel = WorkerChannel(settings)
        batcher = MicroBatcher(
            channel.send,
            max_in_flight=settings.singles_max_in_flight,
            max_size=settings.singles_batch_max,
            on_close=channel.close,
            # From arrival: a request is answered (a 504 at worst) SINGLES_TIMEOUT_S after it
            # came in, however long it waited for a batch to leave, which leaves a second for the
            # way back within the bound a client sees (SINGLES_TIMEOUT_S + 1 s). With the bound
            # here at + 1 s, requests that had waited were answered at 6.0-6.1 s of 6 (the chaos
            # soak's 30-minute run, seed 101: 37 of them while workers were stopped or cut off).
            timeout_s=settings.singles_timeout_s,
            max_waiting=settings.singles_max_waiting,
        )
        request.app.state.batcher = batcher  # api.main's lifespan closes it
    return batcher


def checked_texts(body: ScoreRequest, settings: Settings) -> list[str]:
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
    return [t.replace("\x00", "") for t in body.reviews]


def check_model(name: str) -> None:
    """Raises UnknownModelError (422) unless the model is published (a database read: called
    in the thread pool, and only for a request that names a model)."""
    with session_scope(readonly=True) as session:
        get_model(session, name, get_settings().default_model)


def score_response(answer: SinglesAnswer) -> Response:
    # Serialized by orjson straight from the worker's answer: the shape is ScoreResponse's.
    results = [
        {"p_positive": p, "label": label_of(p), "truncated": t}
        for p, t in zip(answer.p_positive, answer.truncated, strict=True)
    ]
    body = {"model": answer.model, "model_version": answer.model_version, "results": results}
    return Response(orjson.dumps(body), media_type="application/json")


@router.post(
    "/score",
    response_model=ScoreResponse,
    responses=error_responses(400, 422, 503, 504),
    openapi_extra={"security": [{"HTTPBearer": []}]},  # what Depends(bearer) would document
)
async def score(body: ScoreRequest, request: Request) -> Response:
    await check_caller(request)
    texts = checked_texts(body, get_settings())
    if body.model:
        await run_in_threadpool(check_model, body.model)
    arrived = getattr(request.state, "arrived", None)  # set by api.metrics.RequestMetrics
    scoring = asyncio.ensure_future(batcher_of(request).score(texts, body.model, arrived))
    watcher = asyncio.create_task(_drop_when_the_client_leaves(request, scoring))
    try:
        answer = await scoring
    finally:
        watcher.cancel()
    return score_response(answer)


async def _drop_when_the_client_leaves(request: Request, scoring: asyncio.Future[Any]) -> None:
    """A client that hung up is not waited for: its texts leave the waiting list unsent."""
    while not await request.is_disconnected():
        await asyncio.sleep(0.25)
    scoring.cancel()
