"""A webhook receiver for the tests: `python -m tests.webhook_receiver PORT FOLDER ANSWERS`
serves on 127.0.0.1:PORT and answers its POSTs in the order ANSWERS lists them (comma-separated
HTTP statuses, or `hang`: hold the request open without answering), then 200 to every one after.
Each POST is stored as FOLDER/<n>.json (its headers, body and what it was answered), before the
answer, so a test sees attempts that hung too. GET /healthz answers once it is up."""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HANG_S = 60.0


def main(port: int, folder: Path, answers: list[str]) -> None:
    lock = threading.Lock()
    seen = [0]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            self.send_response(200 if self.path == "/healthz" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                seen[0] += 1
                n = seen[0]
            answer = answers[n - 1] if n <= len(answers) else "200"
            record = {
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode(),
                "answer": answer,
            }
            (folder / f"{n}.json").write_text(json.dumps(record))
            if answer == "hang":
                time.sleep(HANG_S)
                return
            self.send_response(int(answer))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]), [a for a in sys.argv[3].split(",") if a])
