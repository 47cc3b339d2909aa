"""docker-compose.yml run for real: the image built from the Dockerfile, the whole stack brought
up with podman-compose, a real file scored through the API's published port while a worker
container is restarted, then everything it made removed. `make compose-test` runs it.

No Docker daemon and no registry here, so: podman with runc (crun refuses this host's mixed
cgroup v1/v2), limits root cannot raise passed as ulimits, both in a containers.conf given by
CONTAINERS_CONF (the system's files untouched); the base image made with debootstrap
(scripts/podman-base-image.sh) and passed as the Dockerfile's BASE_IMAGE; redis and postgres
from that base too (tests/compose/). Where any of it cannot run, the test skips and says why."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from reviewscore.client import Client
from reviewscore.core.settings import REPO_ROOT
from tests.conftest import free_port, sample_reviews, wait_for, write_csv

# The first run builds the images (TensorFlow is most of it): minutes; later runs reuse them.
pytestmark = [pytest.mark.long, pytest.mark.timeout(2700)]

ROWS = 400
BASE = "localhost/reviewscore-base:latest"
CACHE = Path(os.environ.get("REVIEWSCORE_PODMAN_CACHE", "/var/tmp/reviewscore-podman"))
HERE = Path(__file__).parent / "compose"
CONTAINERS_CONF = """\
[containers]
# root here cannot raise its hard limits: podman's defaults (1048576) would fail every start.
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
# crun: "cgroups in hybrid mode not supported"; runc runs on mixed cgroup v1/v2.
runtime = "runc"
"""


def _skip(why: str) -> None:
    message = f"COMPOSE STACK NOT RUN: {why}"
    print(f"\n*** {message} ***", file=sys.stderr)
    pytest.skip(message)


def _tool(name: str, installed_by: str) -> str:
    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        _skip(f"`{name}` is not installed ({installed_by})")
    assert path is not None
    return path


def _run(cmd: list[str], env: dict[str, str], timeout: float, **kwargs: Any) -> str:
    kwargs.setdefault("stderr", subprocess.PIPE)
    done = subprocess.run(
        cmd, env=env, stdout=subprocess.PIPE, text=True, timeout=timeout, check=False, **kwargs
    )
    assert done.returncode == 0, f"{' '.join(cmd[:4])} ...: {(done.stderr or done.stdout)[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def podman_env() -> dict[str, str]:
    """The environment every podman and podman-compose call gets: our containers.conf."""
    podman = _tool("podman", "scripts/install-test-tools.sh installs podman, runc, debootstrap")
    _tool("runc", "scripts/install-test-tools.sh installs it")
    _tool("podman-compose", "pip install -e '.[dev]'")
    if os.geteuid() != 0:
        _skip("needs root (rootless podman needs subuid ranges this test does not set up)")
    CACHE.mkdir(parents=True, exist_ok=True)
    conf = CACHE / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    probe = subprocess.run(
        [podman, "run", "--rm", "--network", "none", BASE, "true"]
        if subprocess.run([podman, "image", "exists", BASE], env=env).returncode == 0
        else [podman, "info"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if probe.returncode != 0:
        _skip(f"podman cannot run here: {probe.stderr.strip()[-500:]}")
    return env


@pytest.fixture(scope="module")
def images(podman_env: dict[str, str]) -> None:
    """The base (made once, cached under CACHE), redis and postgres on it, and the app image
    from the project's Dockerfile with that base."""
    env = podman_env
    if subprocess.run(["podman", "image", "exists", BASE], env=env).returncode != 0:
        if not (CACHE / "base-bookworm.tar").exists() and shutil.which("debootstrap") is None:
            _skip("no base image and no `debootstrap` to make one (install-test-tools.sh)")
        _run([str(REPO_ROOT / "scripts" / "podman-base-image.sh"), BASE], env, timeout=900)
    base = ["--build-arg", f"BASE_IMAGE={BASE}"]
    for name in ("redis", "postgres"):
        _run(
            ["podman", "build", *base, "-f", str(HERE / f"{name}.Containerfile")]
            + ["-t", f"localhost/reviewscore-test-{name}:latest", str(HERE)],
            env,
            timeout=600,
        )
    # pip inside the build uses this host's CA bundle and index (mounted for the build only:
    # nothing of this host goes into the image).
    pip_conf = CACHE / "pip.conf"
    lines = ["[global]", "cert = /run/reviewscore-ca.crt"]
    for key in ("index-url", "extra-index-url"):
        value = os.environ.get(f"PIP_{key.upper().replace('-', '_')}")
        if value and not value.startswith("file:"):
            lines.append(f"{key} = {value}")
    pip_conf.write_text("\n".join(lines) + "\n")
    ca = Path(os.environ.get("PIP_CERT", "/etc/ssl/certs/ca-certificates.crt"))
    mounts = ["-v", f"{pip_conf}:/etc/pip.conf:ro"]
    if ca.exists():
        mounts += ["-v", f"{ca}:/run/reviewscore-ca.crt:ro"]
    _run(
        ["podman", "build", *base, *mounts, "-t", "localhost/reviewscore:latest", str(REPO_ROOT)],
        env,
        timeout=1500,
    )


def _example_env() -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in (REPO_ROOT / ".env.example").read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    )
    return {key.strip(): value.strip() for key, value in pairs}


class Stack:
    def __init__(self, env: dict[str, str], folder: Path) -> None:
        self.env = env
        self.folder = folder
        self.project = env["COMPOSE_PROJECT_NAME"]
        self.url = f"http://127.0.0.1:{env['API_PORT']}"

    def compose(self, *args: str, timeout: float = 300) -> str:
        files = ["-f", "docker-compose.yml", "-f", "podman.yml"]
        cmd = [_tool("podman-compose", "pip install -e '.[dev]'"), *files, *args]
        return _run(cmd, self.env, timeout, cwd=self.folder)

    def up(self) -> None:
        """`up -d`, one layer of depends_on at a time. Debian 12's podman (4.3) cannot wait for
        `service_healthy` (podman-compose ignores the condition below podman 4.6) and runs no
        healthcheck without systemd, so the test waits for each condition the file names,
        running the healthchecks itself; `--no-deps` because podman 4.3's `--requires` fails
        on a dependency that has exited (migrate)."""
        services: dict[str, Any] = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())[
            "services"
        ]
        needed = {
            (dep, cond["condition"])
            for service in services.values()
            for dep, cond in service.get("depends_on", {}).items()
        }
        done: set[str] = set()
        while len(done) < len(services):
            layer = sorted(
                name
                for name, service in services.items()
                if name not in done and set(service.get("depends_on", {})) <= done
            )
            assert layer, f"depends_on has a cycle among {set(services) - done}"
            self.compose("up", "-d", "--no-deps", *layer, timeout=600)
            for name in layer:
                (container,) = self.containers(name, every=True)
                if (name, "service_healthy") in needed:
                    wait_for(partial(self.healthcheck, container), 180, f"{name} healthy")
                if (name, "service_completed_successfully") in needed:
                    code = _run(["podman", "wait", container], self.env, timeout=600).strip()
                    logs = _run(
                        ["podman", "logs", container], self.env, 60, stderr=subprocess.STDOUT
                    )
                    assert code == "0", f"{name} exited with {code}: {logs[-3000:]}"
            done.update(layer)

    def healthcheck(self, container: str) -> bool:
        run = ["podman", "healthcheck", "run", container]
        return subprocess.run(run, env=self.env, capture_output=True, timeout=120).returncode == 0

    def containers(self, service: str, every: bool = False) -> list[str]:
        out = _run(
            ["podman", "ps", *(["-a"] if every else []), "-q"]
            + ["--filter", f"label=com.docker.compose.project={self.project}"]
            + ["--filter", f"label=com.docker.compose.service={service}"],
            self.env,
            timeout=60,
        )
        return out.split()


@pytest.fixture(scope="module")
def stack(
    podman_env: dict[str, str], images: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("compose")
    shutil.copy(REPO_ROOT / "docker-compose.yml", folder / "docker-compose.yml")
    shutil.copy(HERE / "podman.yml", folder / "podman.yml")
    env = {
        **podman_env,
        **_example_env(),
        "COMPOSE_PROJECT_NAME": f"rstest{os.getpid()}",
        "API_PORT": str(free_port()),
        "FLOWER_PORT": str(free_port()),
    }
    running = Stack(env, folder)
    try:
        running.up()
        wait_for(lambda: _healthy(running.url), 300, "the API's /readyz through its published port")
        yield running
    finally:
        subprocess.run(
            [_tool("podman-compose", "pip install -e '.[dev]'"), "-f", "docker-compose.yml"]
            + ["-f", "podman.yml", "down", "-v", "-t", "5"],
            env=env,
            cwd=folder,
            capture_output=True,
            timeout=300,
        )


def _healthy(url: str) -> bool:
    try:
        response = httpx.get(f"{url}/readyz", timeout=5)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and response.json().get("ready") is True


def test_a_file_is_scored_through_the_stack_while_a_worker_restarts(
    stack: Stack, tmp_path: Path
) -> None:
    rows = [{"id": f"r-{i:04d}", "text": r["text"]} for i, r in enumerate(sample_reviews(ROWS))]
    path = write_csv(tmp_path / "reviews.csv", rows)
    # Production mode, as the compose file runs it: a key made with the image's own CLI.
    (api,) = stack.containers("api")
    created = _run(
        ["podman", "exec", api, "reviewscore", "keys", "create", "compose-test"], stack.env, 120
    )
    with Client(stack.url, api_key=created.strip().splitlines()[-1]) as client:
        job = client.submit(path, id_column="id", wait=False)
        wait_for(
            lambda: client.job(job["id"])["scored"] >= ROWS // 10, 300, "the first rows scored"
        )
        assert client.job(job["id"])["scored"] < ROWS, "the job ended before the restart"
        (worker,) = stack.containers("worker")
        # Its stop_grace_period applies: a warm shutdown hands its chunk back or finishes it.
        _run(["podman", "restart", worker], stack.env, timeout=300)
        done = client.wait(job["id"], timeout=600)
        results = client.results(job["id"])
    assert done["status"] == "succeeded"
    assert [r["id"] for r in results] == [r["id"] for r in rows]  # each once, in order
    assert (done["scored"], done["failed"]) == (ROWS, 0)
    assert all(r["label"] in ("positive", "negative") for r in results)


def test_the_stack_comes_down_and_leaves_nothing_behind(stack: Stack) -> None:
    stack.compose("down", "-v", "-t", "5")
    label = f"label=com.docker.compose.project={stack.project}"
    for kind in ("ps", "volume", "network"):
        listing = ["podman", kind, *(["-a"] if kind == "ps" else ["ls"]), "-q", "--filter", label]
        wait_for(lambda: not _left(listing, stack.env), 60, f"no {kind} left")  # noqa: B023


def _left(listing: list[str], env: dict[str, str]) -> list[str]:
    return _run(listing, env, timeout=60).split()
