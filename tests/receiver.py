"""A results PUT target for the tests, as an object store's presigned URL would take a file:
`python -m tests.receiver PORT FOLDER [FAIL_FIRST]` serves on 127.0.0.1:PORT, answers the first
FAIL_FIRST requests 503 (a store having a bad minute), then stores each PUT body under FOLDER
(named by its path, with its query string in a .query file) and answers 200. GET /healthz
answers once it is up."""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit


def main(port: int, folder: Path, fail_first: int) -> None:
    lock = threading.Lock()
    seen = [0]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            self.send_response(200 if self.path == "/healthz" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_PUT(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                seen[0] += 1
                failing = seen[0] <= fail_first
            (folder / "attempts").write_text(str(seen[0]))
            if failing:
                self.send_response(503)
            else:
                url = urlsplit(self.path)
                name = url.path.strip("/").replace("/", "_") or "root"
                (folder / name).write_bytes(body)
                (folder / f"{name}.query").write_text(url.query)
                (folder / f"{name}.type").write_text(self.headers.get("Content-Type", ""))
                self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 0)
