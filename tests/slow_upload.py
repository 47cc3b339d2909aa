"""Helpers for the client, CLI and page tests: an upload held open (a job that stays unfinished
for as long as a test needs), and a web server that is not reviewscore."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from tests.conftest import RunningStack, wait_for

# Under the API's REVIEWSCORE_UPLOAD_IDLE_TIMEOUT_S (30 s) and the test stack's UPLOAD_STALL_S
# (40 s), which would end the held upload; long enough for a CLI started on a loaded 2-core
# machine to attach (12 s was not, once: the job finished before the CLI's Ctrl-C).
HOLD_LIMIT_S = 25


@contextmanager
def held_upload(service: RunningStack, rows: int = 1500) -> Iterator[dict[str, Any]]:
    """A job whose upload has sent `rows` rows (1.2 MB: past the first MiB, which the server
    reads to detect the format before it stores a row) and waits: `uploading`, not finished,
    until the block ends; then the rest is sent and the job is scored as usual. Yields the job."""
    padding = "and it goes on. " * 50
    release = threading.Event()
    answer: dict[str, Any] = {}

    def body() -> Iterator[bytes]:
        yield b"id,text\n"
        yield "".join(f"h{i},Held review {i}: {padding}\n" for i in range(rows)).encode()
        release.wait(HOLD_LIMIT_S)
        yield b"last,The last review.\n"

    def send() -> None:
        with httpx.Client(base_url=service.url, timeout=120) as http:
            answer["response"] = http.post(
                "/v1/jobs",
                params={"id_column": "id"},
                content=body(),
                headers={"Content-Type": "text/csv"},
            )

    before = {j["id"] for j in service.client.jobs(limit=200)["jobs"]}
    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        job = wait_for(
            lambda: next(
                (
                    j
                    for j in service.client.jobs(limit=50)["jobs"]
                    if j["id"] not in before and j["status"] == "uploading"
                ),
                None,
            ),
            30,
            "the held upload's job",
        )
        yield job
    finally:
        release.set()
        sender.join(60)


class _Html(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        page = b"<!doctype html><html><body><h1>Welcome to nginx!</h1></body></html>"
        self.send_response(404 if self.path.startswith("/v1/") else 200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, *_: Any) -> None:
        pass


@contextmanager
def other_web_server() -> Iterator[str]:
    """A web server that answers HTML pages, as a wrong --url might find."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Html)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
