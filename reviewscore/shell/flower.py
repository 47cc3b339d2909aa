"""Flower with every route behind its basic auth: `python -m reviewscore.shell.flower <celery args>`.

Flower 2 checks `--basic-auth` only in the handlers marked `@authenticated`; `/metrics`,
`/healthcheck`, `/static/` and the login page answer anyone. Before Flower builds its
application, each of its routes gets a gate that asks for the same credentials, so nothing
Flower serves is open. The command line is Celery's own (`-A app flower --basic-auth=u:p ...`).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import sys
from typing import Any

from tornado.web import HTTPError, RequestHandler


def credentials_ok(handler: RequestHandler) -> bool:
    """The request carries one of the `--basic-auth` user:password pairs (compared in constant
    time). With no pair configured, Flower is open: that is the operator's explicit choice."""
    options = getattr(handler.application, "options", None)
    allowed: list[str] = list(getattr(options, "basic_auth", None) or [])
    if not allowed:
        return True
    scheme, _, encoded = handler.request.headers.get("Authorization", "").partition(" ")
    if scheme != "Basic":
        return False
    try:
        given = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    return any(hmac.compare_digest(given.encode(), pair.encode()) for pair in allowed)


class AuthGate(RequestHandler):
    """Mixed in front of each Flower handler: no credentials, no answer (401)."""

    def prepare(self) -> Any:
        if not credentials_ok(self):
            self.set_header("WWW-Authenticate", 'Basic realm="flower"')
            raise HTTPError(401)
        return super().prepare()


def gated(handler: type[RequestHandler]) -> type[RequestHandler]:
    if issubclass(handler, AuthGate):
        return handler
    return type(handler.__name__, (AuthGate, handler), {})


def gate_every_route() -> None:
    """Puts AuthGate in front of every handler in Flower's route table, in place (Flower's
    application reads the same list when it is built), and in front of the static files that
    tornado serves by itself from `static_path`."""
    from flower import urls
    from tornado.web import StaticFileHandler

    urls.settings["static_handler_class"] = gated(StaticFileHandler)

    for i, route in enumerate(urls.handlers):
        if isinstance(route, tuple):
            urls.handlers[i] = (route[0], gated(route[1]), *route[2:])
        else:  # a tornado URLSpec
            route.handler_class = gated(route.handler_class)


def main() -> None:
    from reviewscore.core.settings import get_settings

    refusal = get_settings().unsafe_flower_password()
    if refusal is not None:
        sys.exit(f"reviewscore flower: {refusal}")
    gate_every_route()
    from celery.bin.celery import main as celery_main

    sys.argv[0] = "celery"
    celery_main()


if __name__ == "__main__":
    main()
