"""A web server for the tests to talk to, as an object store's presigned URL or a webhook
endpoint would: `python -m tests.receiver PORT FOLDER [ANSWERS]` serves on 127.0.0.1:PORT and
answers its PUTs and POSTs, in arrival order, as ANSWERS lists them (comma-separated HTTP
statuses, or `hang`: hold the request open without answering), then 200 to every one after.

Each request is written under FOLDER before it is answered, so a test sees attempts that failed
or hung too: a PUT's body as FOLDER/<its path> (with .query and .type files beside it) once it
is answered 2xx, a POST as FOLDER/<n>.json (headers, body, the answer); FOLDER/attempts counts
them. GET /healthz answers once it is up."""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

HANG_S = 60.0


def main(port: int, folder: Path, answers: list[str]) -> None:
    lock = threading.Lock()
    seen = [0]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            self._answer(200 if self.path == "/healthz" else 404)

        def do_PUT(self) -> None:  # noqa: N802
            body, n, answer = self._arrived()
            if answer.isdigit() and int(answer) < 300:
                url = urlsplit(self.path)
                name = url.path.strip("/").replace("/", "_") or "root"
                (folder / name).write_bytes(body)
                (folder / f"{name}.query").write_text(url.query)
                (folder / f"{name}.type").write_text(self.headers.get("Content-Type", ""))
            self._answer(answer)

        def do_POST(self) -> None:  # noqa: N802
            body, n, answer = self._arrived()
            record = {
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode(),
                "answer": answer,
            }
            (folder / f"{n}.json").write_text(json.dumps(record))
            self._answer(answer)

        def _arrived(self) -> tuple[bytes, int, str]:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                seen[0] += 1
                n = seen[0]
            (folder / "attempts").write_text(str(n))
            return body, n, answers[n - 1] if n <= len(answers) else "200"

        def _answer(self, answer: int | str) -> None:
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
    main(
        int(sys.argv[1]),
        Path(sys.argv[2]),
        [a for a in sys.argv[3].split(",") if a] if len(sys.argv) > 3 else [],
    )
