"""The FastAPI application: routers, error handling and the browser page.

Run with: uvicorn api.main:app
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from api import ui
from api.routes import jobs, score, system
from reviewscore.core.errors import ReviewscoreError
from reviewscore.core.settings import Environment, get_settings

log = logging.getLogger("reviewscore.api")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    if settings.env is Environment.development:
        log.warning(
            "REVIEWSCORE_ENV=development: API keys are NOT required; "
            "set REVIEWSCORE_ENV=production to turn authentication on"
        )
    yield
    batcher = getattr(app.state, "batcher", None)
    if batcher is not None:
        await batcher.close()


def create_app() -> FastAPI:
    app = FastAPI(
        title="reviewscore",
        version="0.1.0",
        description="Batch and single scoring of movie-review sentiment.",
        lifespan=lifespan,
    )

    @app.exception_handler(ReviewscoreError)
    async def _known_error(_: Request, exc: ReviewscoreError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return JSONResponse({"detail": exc.message}, status_code=exc.status_code, headers=headers)

    # A part of the service away (restarting, or cut off from this host) is a 503 naming it,
    # never a bare 500: the client may retry, and nothing it had sent was lost.
    async def _part_unavailable(part: str, exc: Exception) -> JSONResponse:
        log.warning("%s unavailable: %s: %s", part, type(exc).__name__, exc)
        return JSONResponse(
            {"detail": f"{part} is unavailable ({type(exc).__name__}); try again shortly"},
            status_code=503,
        )

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    async def _database_away(_: Request, exc: Exception) -> JSONResponse:
        return await _part_unavailable("the database", exc)

    @app.exception_handler(BrokerError)
    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    async def _redis_away(_: Request, exc: Exception) -> JSONResponse:
        return await _part_unavailable("Redis (the task queue)", exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            # Starlette's Allow names only the first route on the path; name every route's.
            allowed = sorted(
                {
                    method
                    for route in request.app.routes
                    if route.matches(request.scope)[0] is not Match.NONE
                    for method in getattr(route, "methods", None) or ()
                }
            )
            exc = StarletteHTTPException(405, exc.detail, {"Allow": ", ".join(allowed)})
        return await http_exception_handler(request, exc)

    app.include_router(system.router)
    app.include_router(score.router)
    app.include_router(jobs.router)
    app.include_router(ui.router)
    return app


app = create_app()
