"""Starts and stops the whole service as child processes: Redis, API, worker, beat and Flower.

`reviewscore run` (and so `make run`) uses it, and so do the integration tests.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from reviewscore.core.settings import REPO_ROOT, Settings
from reviewscore.shell.redis_server import EmbeddedRedis


@dataclass
class Child:
    name: str
    args: list[str]
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes] = field(repr=False)


class Stack:
    """The service's processes, started in dependency order and stopped in reverse."""

    def __init__(self, settings: Settings, *, extra_env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.log_dir = settings.var_dir / "logs"
        self.redis: EmbeddedRedis | None = None
        self.children: dict[str, Child] = {}
        self.extra_env = extra_env or {}

    # environment shared by every child ------------------------------------------------
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "REVIEWSCORE_ENV": self.settings.env.value,
                "REVIEWSCORE_VAR_DIR": str(self.settings.var_dir),
                "REVIEWSCORE_DATABASE_URL": self.settings.database_url,
                "REVIEWSCORE_REDIS_URL": self.settings.redis_url,
                "REVIEWSCORE_MODELS_DIR": str(self.settings.models_dir),
                "REVIEWSCORE_FLOWER_USER": self.settings.flower_user,
                "REVIEWSCORE_FLOWER_PASSWORD": self.settings.flower_password,
                "PYTHONUNBUFFERED": "1",
                "TF_CPP_MIN_LOG_LEVEL": "2",
            }
        )
        env.update(self.extra_env)
        pythonpath = [str(REPO_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(":") if p]
        env["PYTHONPATH"] = ":".join(pythonpath)
        return env

    def spawn(self, name: str, args: list[str]) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        log_file = open(log_path, "ab")  # noqa: SIM115 - lives as long as the child
        process = subprocess.Popen(
            args,
            cwd=REPO_ROOT,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
        )
        child = Child(name, args, process, log_path, log_file)
        self.children[name] = child
        return child

    # the processes ----------------------------------------------------------------------
    def start_redis(self) -> None:
        if self.settings.redis_url:
            return
        self.redis = EmbeddedRedis(
            self.settings.var_dir / "redis", socket=self.settings.redis_socket
        )
        self.redis.start()

    def api_args(self) -> list[str]:
        s = self.settings
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "api.main:app",
            "--host",
            s.api_host,
            "--port",
            str(s.api_port),
            "--no-access-log",
            "--timeout-graceful-shutdown",
            "10",
        ]

    def worker_args(self, name: str = "worker", concurrency: int | None = None) -> list[str]:
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker.tasks",
            "worker",
            "-Q",
            "singles,bulk",
            "-n",
            f"{name}@%h",
            "--loglevel",
            "INFO",
            "-c",
            str(concurrency or self.settings.worker_processes),
            "-E",
            "--without-mingle",
            "--without-gossip",
        ]

    def beat_args(self) -> list[str]:
        schedule = self.settings.var_dir / "celerybeat-schedule"
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "reviewscore.core.celery_app:celery_app",
            "beat",
            "-s",
            str(schedule),
            "--loglevel",
            "INFO",
        ]

    def flower_args(self) -> list[str]:
        s = self.settings
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "reviewscore.core.celery_app:celery_app",
            "flower",
            f"--port={s.flower_port}",
            "--address=127.0.0.1",
            f"--basic-auth={s.flower_user}:{s.flower_password}",
        ]

    def start(self, *, flower: bool = True, beat: bool = True, workers: int = 1) -> None:
        self.start_redis()
        self.spawn("api", self.api_args())
        for i in range(workers):
            name = "worker" if i == 0 else f"worker{i + 1}"
            self.spawn(name, self.worker_args(name))
        if beat:
            self.spawn("beat", self.beat_args())
        if flower:
            self.spawn("flower", self.flower_args())

    # waiting --------------------------------------------------------------------------------
    def check_alive(self) -> None:
        for child in self.children.values():
            code = child.process.poll()
            if code is not None:
                raise RuntimeError(f"{child.name} exited with {code}; see {child.log_path}")

    def wait_until(self, what: str, condition: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if condition():
                    return
            except (httpx.HTTPError, OSError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{what} not ready after {timeout:.0f}s; logs in {self.log_dir}")

    def wait_ready(self, timeout: float = 180.0) -> None:
        url = f"http://{self.settings.api_host}:{self.settings.api_port}"
        self.wait_until(
            "API", lambda: httpx.get(f"{url}/healthz", timeout=2).status_code == 200, timeout
        )
        self.wait_until(
            "workers", lambda: httpx.get(f"{url}/readyz", timeout=5).json()["ready"], timeout
        )

    # stopping -------------------------------------------------------------------------------
    def stop_child(self, name: str, timeout: float = 60.0) -> None:
        child = self.children.pop(name, None)
        if child is None:
            return
        if child.process.poll() is None:
            # SIGTERM: uvicorn drains requests; a Celery worker finishes its current chunk.
            os.killpg(child.process.pid, signal.SIGTERM)
            try:
                child.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(child.process.pid, signal.SIGKILL)
                child.process.wait()
        else:
            # The pool's children may outlive a crashed parent.
            try:
                os.killpg(child.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        child.log_file.close()

    def stop(self) -> None:
        for name in ["api", "flower", "beat"] + [n for n in list(self.children) if "worker" in n]:
            self.stop_child(name)
        for name in list(self.children):
            self.stop_child(name)
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
