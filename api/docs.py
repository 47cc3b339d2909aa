"""The interactive API docs (/docs, Swagger UI) served entirely by this server: Swagger UI's
files ship in the `fastapi-offline` package, so the docs render on a machine without internet
(FastAPI's default loads them from a CDN). ReDoc is left out: it loads its logo from its CDN."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse

from reviewscore.core.errors import ReviewscoreError


def _assets_dir() -> Path:
    # Located without importing the package (it would build an app of its own).
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("fastapi-offline is not installed: pip install -e .")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


ASSETS_DIR = _assets_dir()
# Only these files are served: a name from the URL never becomes a path by itself.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}
OPENAPI_URL = "/openapi.json"
STATIC = "/docs/static"
TITLE = "reviewscore"

router = APIRouter(include_in_schema=False)


class DocsAssetNotFoundError(ReviewscoreError):
    status_code = 404


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return get_swagger_ui_html(
        openapi_url=f"{root}{OPENAPI_URL}",
        title=f"{TITLE} - API docs",
        swagger_js_url=f"{root}{STATIC}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{STATIC}/swagger-ui.css",
        swagger_favicon_url=f"{root}{STATIC}/favicon.png",
        oauth2_redirect_url=f"{root}/docs/oauth2-redirect",
        # No call to the public validator service from the page.
        swagger_ui_parameters={"validatorUrl": None},
    )


@router.get("/docs/oauth2-redirect")
def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get(STATIC + "/{name}")
def asset(name: str) -> FileResponse:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise DocsAssetNotFoundError(f"no file {name!r} in the docs' assets")
    # The files change only with the package: let browsers keep them for a day.
    return FileResponse(
        ASSETS_DIR / name,
        media_type=media_type,
        headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"},
    )
