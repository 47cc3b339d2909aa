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
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from api import errors, ui
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

    errors.install(app)  # database and Redis failures: JSON 503 naming the part
    app.include_router(system.router)
    app.include_router(score.router)
    app.include_router(jobs.router)
    app.include_router(ui.router)
    return app


app = create_app()
