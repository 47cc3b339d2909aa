"""uvicorn's httptools protocol with the limits it lacks: a deadline and a size cap on each
request's head, and a cap on open connections. `--http api.http_guard:GuardedHttpToolsProtocol`.

uvicorn arms no timer before a request's head is complete (only keep-alive after a response),
and httptools sets no size limit on headers: a connection that sends half a head, or a 200 MB
header, is kept, and descriptors run out. Here a head must arrive whole within
REVIEWSCORE_HTTP_HEADER_TIMEOUT_S (408, then the connection closes) and within
REVIEWSCORE_HTTP_MAX_HEADER_BYTES (431); beyond REVIEWSCORE_HTTP_MAX_CONNECTIONS open
connections a new one is closed at once, so its descriptor is freed at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from reviewscore.core.settings import get_settings

log = logging.getLogger("uvicorn.error")
_refused = {"connections": 0}


def _response(status: int, reason: str, detail: str) -> bytes:
    body = json.dumps({"detail": detail}).encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self._max_connections = settings.http_max_connections
        self._head_timeout_s = settings.http_header_timeout_s
        self._max_head_bytes = settings.http_max_header_bytes
        # True from a connection's start, or a request's first byte, until its head is parsed.
        self._head_pending = True
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._max_connections:
            _refused["connections"] += 1
            if _refused["connections"] % 1000 == 1:
                log.warning(
                    "over %d open connections: closing new ones (%d so far)",
                    self._max_connections,
                    _refused["connections"],
                )
            transport.abort()
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # the parser calls on_message_begin / on_headers_complete
        if not self._head_pending or self.transport.is_closing():
            # Body bytes are not counted, also those that arrive after an early answer (a 503
            # or 415 sent before the body was read) on a connection that is then kept alive.
            return
        self._head_bytes += len(data)
        if self._head_bytes > self._max_head_bytes:
            self._refuse(
                431,
                "Request Header Fields Too Large",
                f"the request's headers are over {self._max_head_bytes:,} bytes",
            )

    def on_message_begin(self) -> None:
        # A request's first byte (also a pipelined one, sent before the previous answer): its
        # head gets the deadline and the size cap. An idle keep-alive connection is uvicorn's
        # keep-alive timer's.
        self._head_pending = True
        self._head_bytes = 0
        self._arm_head_timer()
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._head_pending = False
        self._head_bytes = 0
        self._cancel_head_timer()
        super().on_headers_complete()

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self._head_timeout_s, self._head_too_slow)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._head_pending and not self.transport.is_closing():
            self._refuse(
                408,
                "Request Timeout",
                f"the request's headers did not arrive within {self._head_timeout_s:g} s",
            )

    def _refuse(self, status: int, reason: str, detail: str) -> None:
        self._cancel_head_timer()
        self.transport.write(_response(status, reason, detail))
        self.transport.close()
