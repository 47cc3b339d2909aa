"""Starts, supervises and stops the whole service as child processes: Redis, API, worker, beat
and Flower.

`reviewscore run` (and so `make run`) uses it, and so do the integration tests. Every child
dies with the runner, even when the runner is SIGKILLed (PR_SET_PDEATHSIG), and `supervise()`
restarts a child that exits, with backoff, instead of stopping the rest. Stopping asks each
child's main process to stop (SIGTERM: the API drains, a Celery worker finishes its chunk) and
waits for it before anything is killed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from reviewscore.core.processes import die_with_parent
from reviewscore.core.settings import REPO_ROOT, Settings
from reviewscore.shell.log_files import ChildLog
from reviewscore.shell.redis_server import EmbeddedRedis, process_from_pidfile

# A child that crashes is started again after 1, 2, 4 ... up to 30 s; one that ran this long
# before it exited starts again at once.
RESTART_BACKOFF_MAX_S = 30.0
STABLE_AFTER_S = 60.0


class StackConflictError(RuntimeError):
    """Something this stack needs is taken: a port, or the var folder by a live older run."""


@dataclass
class Child:
    name: str
    args: list[str]
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: ChildLog = field(repr=False)
    started_at: float = field(default_factory=time.monotonic)
    crashes: int = 0  # in a row, each within STABLE_AFTER_S of its start
    restart_at: float | None = None  # set while a crashed child waits for its restart


def backoff(crashes: int) -> float:
    return 0.0 if crashes <= 0 else min(RESTART_BACKOFF_MAX_S, 2.0 ** (crashes - 1))


def port_owner(port: int) -> str:
    """Who listens on a TCP port, for the one-line conflict report (best effort)."""
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
                if conn.pid is None:
                    return ""
                cmdline = " ".join(psutil.Process(conn.pid).cmdline())
                return f" by pid {conn.pid} ({cmdline[:90]})"
    except (psutil.Error, OSError):
        pass
    return ""


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn and tornado bind
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class Stack:
    """The service's processes, started in dependency order, supervised, stopped in reverse.

    Children get a parent-death signal tied to the thread that spawns them: use a Stack from
    the main thread (or one that lives as long as the stack)."""

    def __init__(
        self,
        settings: Settings,
        *,
        extra_env: dict[str, str] | None = None,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.log_dir = settings.var_dir / "logs"
        self.redis: EmbeddedRedis | None = None
        self.redis_crashes = 0
        self.redis_restart_at: float | None = None
        self.redis_started_at = 0.0
        self.children: dict[str, Child] = {}
        self.extra_env = extra_env or {}
        self.notify = notify or (lambda line: print(line, file=sys.stderr, flush=True))
        self.hurry = threading.Event()  # a second Ctrl-C: stop without waiting

    # before starting --------------------------------------------------------------------------
    @property
    def pidfile(self) -> Path:
        return self.settings.var_dir / "run.pid"

    def older_run(self) -> psutil.Process | None:
        """A `reviewscore run` that still runs on this var folder (its pidfile checked)."""
        return process_from_pidfile(self.pidfile, "reviewscore", "run")

    def preflight(self, *, flower: bool = True) -> None:
        """Raises StackConflictError, in one line, if this stack cannot start: an older run
        still holds the var folder, or a port is taken. Nothing is started or signalled."""
        older = self.older_run()
        if older is not None:
            raise StackConflictError(
                f"reviewscore run is already running on {self.settings.var_dir} (pid "
                f"{older.pid}); stop it first (Ctrl-C in its terminal, or kill {older.pid})"
            )
        s = self.settings
        ports = [("API", s.api_host, s.api_port)]
        if flower:
            ports.append(("Flower", "127.0.0.1", s.flower_port))
        for what, host, port in ports:
            if not port_free(host, port):
                raise StackConflictError(
                    f"port {port} ({what}, {host}) is taken{port_owner(port)}; stop that "
                    f"process or choose another port (REVIEWSCORE_{what.upper()}_PORT)"
                )

    def write_pidfile(self) -> None:
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        self.pidfile.write_text(f"{os.getpid()}\n")

    def remove_pidfile(self) -> None:
        run = self.older_run()
        if run is not None and run.pid == os.getpid():
            self.pidfile.unlink(missing_ok=True)

    # environment shared by every child ------------------------------------------------
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "REVIEWSCORE_ENV": self.settings.env.value,
                "REVIEWSCORE_VAR_DIR": str(self.settings.var_dir),
                "REVIEWSCORE_DATABASE_URL": self.settings.database_url,
                "REVIEWSCORE_REDIS_URL": self.redis.url if self.redis else self.settings.redis_url,
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
        # Through a pipe, so the file rolls over (REVIEWSCORE_LOG_MAX_BYTES, LOG_BACKUPS).
        log_file = ChildLog(log_path, self.settings.log_max_bytes, self.settings.log_backups)
        parent = os.getpid()
        try:
            process = subprocess.Popen(
                args,
                cwd=REPO_ROOT,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=log_file.write_fd,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
                # If we die, even by SIGKILL, the child is told to stop: no orphans.
                preexec_fn=lambda: die_with_parent(signal.SIGTERM, parent),
            )
        finally:
            log_file.child_started()
        previous = self.children.get(name)
        child = Child(name, args, process, log_path, log_file)
        if previous is not None:
            child.crashes = previous.crashes
            previous.log_file.close(timeout=1.0)
        self.children[name] = child
        return child

    # the processes ----------------------------------------------------------------------
    def start_redis(self) -> None:
        if self.settings.redis_url:
            return
        self.redis = EmbeddedRedis(self.settings.embedded_redis_dir)
        self.redis.start()
        self.redis_started_at = time.monotonic()

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
            # httptools with a head deadline, a header size cap and a connection cap.
            "--http",
            "api.http_guard:GuardedHttpToolsProtocol",
        ]

    def worker_args(
        self, name: str = "worker", concurrency: int | None = None, queues: str = "singles,bulk"
    ) -> list[str]:
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker.tasks",
            "worker",
            "-Q",
            queues,
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
            "reviewscore.shell.flower",  # Celery's flower command, every route behind auth
            "-A",
            "reviewscore.core.celery_app:celery_app",
            "flower",
            f"--port={s.flower_port}",
            "--address=127.0.0.1",
            f"--basic-auth={s.flower_user}:{s.flower_password}",
        ]

    def start(
        self,
        *,
        flower: bool = True,
        beat: bool = True,
        workers: int = 1,
        singles_worker: bool = False,
    ) -> None:
        self.start_redis()
        self.spawn("api", self.api_args())
        for i in range(workers):
            name = "worker" if i == 0 else f"worker{i + 1}"
            self.spawn(name, self.worker_args(name))
        if singles_worker:
            # A node that takes only single reviews: they never wait behind a bulk chunk in
            # flight (the other nodes take both queues). One process, one more model in memory.
            self.spawn("singles", self.worker_args("singles", concurrency=1, queues="singles"))
        if beat:
            self.spawn("beat", self.beat_args())
        if flower:
            self.spawn("flower", self.flower_args())

    # supervision ----------------------------------------------------------------------------
    def supervise(self) -> None:
        """One pass: a child (or the embedded Redis) that exited is started again, after a
        backoff that grows while it keeps crashing. Call it every second or so."""
        now = time.monotonic()
        self._supervise_redis(now)
        for child in list(self.children.values()):
            code = child.process.poll()
            if code is None:
                continue
            if child.restart_at is None:
                child.crashes = 1 if now - child.started_at >= STABLE_AFTER_S else child.crashes + 1
                child.restart_at = now + backoff(child.crashes - 1)
                self._reap_group(child.process.pid)
                self.notify(
                    f"{child.name} exited with {code}; restarting it in "
                    f"{child.restart_at - now:.0f} s (see {child.log_path})"
                )
            elif now >= child.restart_at:
                self.spawn(child.name, child.args)

    def _supervise_redis(self, now: float) -> None:
        redis = self.redis
        if redis is None or redis.alive():
            return
        if self.redis_restart_at is None:
            code = redis.process.returncode if redis.process else None
            stable = now - self.redis_started_at >= STABLE_AFTER_S
            self.redis_crashes = 1 if stable else self.redis_crashes + 1
            self.redis_restart_at = now + backoff(self.redis_crashes - 1)
            self.notify(
                f"redis exited with {code}; restarting it in {self.redis_restart_at - now:.0f} s"
            )
        if now >= self.redis_restart_at:
            try:
                redis.start()  # same port, password and AOF: the children's URL stays right
                self.redis_started_at = time.monotonic()
                self.notify("redis is back")
            except (RuntimeError, TimeoutError, OSError) as exc:
                self.notify(f"redis did not start: {exc}")
                self.redis_crashes += 1
                self.redis_restart_at = time.monotonic() + backoff(self.redis_crashes - 1)
                return
            self.redis_restart_at = None

    def _reap_group(self, pid: int) -> None:
        # A crashed Celery main process may leave pool processes behind (they also get a
        # parent-death SIGKILL, see worker/signals.py); its session is the group to clear.
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

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
            except (httpx.HTTPError, OSError, KeyError, ValueError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{what} not ready after {timeout:.0f}s; logs in {self.log_dir}")

    @property
    def api_url(self) -> str:
        return f"http://{self.settings.api_host}:{self.settings.api_port}"

    def ready(self) -> bool:
        """The API answers and says it is ready (database, Redis, a worker with its model)."""
        try:
            return bool(httpx.get(f"{self.api_url}/readyz", timeout=5).json()["ready"])
        except (httpx.HTTPError, OSError, KeyError, ValueError):
            return False

    def wait_ready(self, timeout: float = 180.0) -> None:
        url = self.api_url
        self.wait_until(
            "API", lambda: httpx.get(f"{url}/healthz", timeout=2).status_code == 200, timeout
        )
        self.wait_until("workers", self.ready, timeout)

    # stopping -------------------------------------------------------------------------------
    def _wait(self, process: subprocess.Popen[bytes], deadline: float) -> bool:
        while time.monotonic() < deadline and not self.hurry.is_set():
            if process.poll() is not None:
                return True
            time.sleep(0.05)
        return process.poll() is not None

    def stop_children(self, names: list[str], timeout: float) -> None:
        """SIGTERM to each child's main process only, never its group: a Celery worker then
        finishes its chunk and stops its own pool (a SIGTERM to the group would hit the pool
        processes directly and abort their chunks). What is left after `timeout` is killed."""
        children = [self.children.pop(n) for n in names if n in self.children]
        for child in children:
            if child.process.poll() is None:
                try:
                    child.process.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        for child in children:
            if not self._wait(child.process, deadline):
                self.notify(f"{child.name} did not stop within {timeout:.0f} s: killing it")
            self._reap_group(child.process.pid)
            child.process.wait()
            child.log_file.close()

    def stop_child(self, name: str, timeout: float | None = None) -> None:
        self.stop_children([name], self.settings.shutdown_grace_s if timeout is None else timeout)

    def stop(self) -> None:
        # Everything but Redis at once (each drains on its own), then Redis: a worker acks its
        # last chunk through Redis, so Redis goes last.
        self.stop_children(list(self.children), self.settings.shutdown_grace_s)
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
