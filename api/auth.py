"""API keys: who is calling. In development auth is off and every caller is anonymous (None)."""

from __future__ import annotations

import hmac

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from reviewscore.core import keys
from reviewscore.core.db import session_scope
from reviewscore.core.errors import ReviewscoreError
from reviewscore.core.settings import Environment, get_settings

bearer = HTTPBearer(auto_error=False, description="an API key from `reviewscore keys create`")


class NotAuthenticatedError(ReviewscoreError):
    status_code = 401


def auth_enabled() -> bool:
    return get_settings().env is Environment.production


def current_key_id(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
) -> int | None:
    """The caller's key id, or None when auth is off; jobs are scoped to it."""
    if not auth_enabled():
        return None
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise NotAuthenticatedError(
            "this server needs an API key: send 'Authorization: Bearer <key>' "
            "(create one with `reviewscore keys create NAME`)"
        )
    with session_scope(readonly=True) as session:
        key = keys.find_active(session, credentials.credentials)
    if key is None:
        raise NotAuthenticatedError("the API key is unknown or revoked")
    request.state.key_id = key
    return key


def metrics_token(
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
) -> None:
    """/metrics is open unless REVIEWSCORE_METRICS_TOKEN is set; then that token is needed
    (Prometheus: `authorization: {credentials: ...}`), in every environment."""
    expected = get_settings().metrics_token
    if not expected:
        return
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise NotAuthenticatedError(
            "/metrics needs the metrics token: send 'Authorization: Bearer <token>' "
            "(REVIEWSCORE_METRICS_TOKEN)"
        )
    if not hmac.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise NotAuthenticatedError("the metrics token is wrong (REVIEWSCORE_METRICS_TOKEN)")
