"""A real web server for the fetch tests: Debian's nginx on a free loopback port, serving a
folder with byte ranges (/files/), without them (/noranges/), slowly (/slow/), and a redirect
to another origin (/away/). Skips, saying why, where nginx is not installed."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)

CONFIG = """
{user}
daemon off;
master_process on;
worker_processes 1;
pid {run}/nginx.pid;
error_log {run}/error.log info;
events {{ worker_connections 64; }}
http {{
  access_log {run}/access.log;
  client_body_temp_path {run}/body;
  proxy_temp_path {run}/proxy;
  fastcgi_temp_path {run}/fastcgi;
  uwsgi_temp_path {run}/uwsgi;
  scgi_temp_path {run}/scgi;
  default_type application/octet-stream;
  server {{
    listen 127.0.0.1:{port};
    location /files/ {{ alias {root}/; }}
    location /noranges/ {{ alias {root}/; max_ranges 0; }}
    location /slow/ {{ alias {root}/; limit_rate {rate}; }}
    location ~ ^/away/(.*)$ {{ return 302 http://127.0.0.2:{port}/files/$1; }}
    location ~ ^/here/(.*)$ {{ return 302 /files/$1; }}
  }}
}}
"""


class WebServer:
    """One nginx; stop() and start() again keep its port, as a restarted server would."""

    def __init__(self, nginx: str, run_dir: Path, root: Path, rate: str = "256k") -> None:
        self.nginx, self.run_dir, self.root = nginx, run_dir, root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = run_dir / "nginx.conf"
        # As root, nginx's workers would run as nobody, who cannot read pytest's 0700 folders.
        user = "user root;" if os.geteuid() == 0 else ""
        self.config.write_text(
            CONFIG.format(user=user, run=run_dir, port=self.port, root=root, rate=rate)
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10) -> None:
        # -e: nginx opens its default error log before reading the config; point it here.
        self.process = subprocess.Popen(
            [self.nginx, "-p", str(self.run_dir), "-c", str(self.config), "-e", "error.log"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.process.poll() is not None:
                raise AssertionError(f"nginx exited: {self.process.stderr.read()!r}")  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                raise AssertionError(f"nginx did not answer on port {self.port} in {timeout}s")
            time.sleep(0.02)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """SIGTERM is nginx's fast shutdown: open connections are dropped, not finished."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def requests(self) -> list[str]:
        log = self.run_dir / "access.log"
        return log.read_text().splitlines() if log.exists() else []


@pytest.fixture
def webserver(tmp_path: Path) -> Iterator[WebServer]:
    """nginx serving tmp_path/www (put files there), its own files in tmp_path/nginx."""
    if NGINX is None:
        pytest.skip(
            "nginx is not installed (scripts/install-test-tools.sh, or apt-get install "
            "nginx): the fetch tests need a real web server"
        )
    root, run_dir = tmp_path / "www", tmp_path / "nginx"
    root.mkdir()
    run_dir.mkdir()
    server = WebServer(NGINX, run_dir, root)
    server.start()
    yield server
    server.stop()
