"""The FastAPI application: routers, error handling (every error is `{"detail": "<one sentence>"}`,
validation errors included), request metrics, the offline API docs and the browser page.

Run with: uvicorn api.main:app
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from api import docs, errors, ui
from api.metrics import RequestMetrics
from api.routes import jobs, parts, score, system, training, usage
from api.schemas import ErrorBody
from reviewscore.core.errors import QuotaExceededError, ReviewscoreError
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


WHERE = {
    "query": "query parameter",
    "path": "path parameter",
    "header": "header",
    "cookie": "cookie",
}
MAX_ERRORS_SHOWN = 3


def _field(loc: Sequence[Any]) -> str:
    name = ""
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name


def describe_validation_error(error: dict[str, Any]) -> str:
    """One FastAPI/pydantic validation error as a sentence naming the field and the problem."""
    loc = list(error.get("loc", ()))
    source = str(loc.pop(0)) if loc else ""
    message = str(error.get("msg", "is invalid"))
    if error.get("type") == "json_invalid":
        reason = (error.get("ctx") or {}).get("error", "")
        at = f" (at character {loc[0]})" if loc and isinstance(loc[0], int) else ""
        return f"the request body is not valid JSON: {reason or message}{at}"
    if source == "body" and not loc:
        return "the request body is missing" if error.get("type") == "missing" else message
    what = f"{WHERE.get(source, 'field')} '{_field(loc) or source}'"
    if error.get("type") == "missing":
        return f"{what} is required"
    given = error.get("input")
    if (
        isinstance(given, str | int | float)
        and not isinstance(given, bool)
        and len(str(given)) <= 40
    ):
        message += f" (got {given!r})"
    return f"{what}: {message}"


def describe_validation_errors(errors: Sequence[dict[str, Any]]) -> str:
    parts = [describe_validation_error(e) for e in errors[:MAX_ERRORS_SHOWN]]
    if len(errors) > MAX_ERRORS_SHOWN:
        parts.append(f"and {len(errors) - MAX_ERRORS_SHOWN} more")
    return "; ".join(parts) or "the request is invalid"


def _openapi_with_string_errors(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, with every 422 answer described as the `{"detail": "..."}` the
    validation handler sends instead of FastAPI's list of field errors."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.setdefault("ErrorBody", ErrorBody.model_json_schema())
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            answer = operation.get("responses", {}).get("422")
            if answer is not None:
                answer["content"] = {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}
                }
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    app.openapi_schema = schema
    return schema


def create_app() -> FastAPI:
    app = FastAPI(
        title="reviewscore",
        version="0.1.0",
        description="Batch and single scoring of movie-review sentiment.",
        lifespan=lifespan,
        # Served from this server's own files (api/docs.py), never from a CDN.
        docs_url=None,
        redoc_url=None,
        # FastAPI's native OpenTelemetry looks for providers on every request (160 -> 144 us per
        # request with dependencies, measured in an isolated app); metrics are our own /metrics.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.openapi = lambda: _openapi_with_string_errors(app)  # type: ignore[method-assign]
    app.add_middleware(RequestMetrics)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": describe_validation_errors(exc.errors())}, status_code=422)

    @app.exception_handler(ReviewscoreError)
    async def _known_error(_: Request, exc: ReviewscoreError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        if isinstance(exc, QuotaExceededError):
            headers = {"Retry-After": str(exc.retry_after_s)}
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
    app.include_router(training.router)
    app.include_router(jobs.router)
    app.include_router(parts.router)
    app.include_router(usage.router)
    app.include_router(ui.router)
    app.include_router(docs.router)
    return app


app = create_app()
